"""Tools around the live pipeline: benchmark, recording reports, offline tracking, synthetic
sessions, and Facemap's own speed for comparison. Nothing on the live path imports them."""
