"""Basler cameras through pypylon, Basler's Python binding of the pylon SDK.

Frame ids: ``frame_id`` follows the camera's own frame counter, the block id of each grab
result. A jump in it is frames that never reached facestream: skipped by the grab strategy
(``NumberOfSkippedImages``), incomplete transfers, frames the driver had no buffer for. The jump
becomes ``dropped_before``. When the counter goes backwards (a 16-bit GigE block id wrapping,
a camera reopened after it was unplugged) ids go on from the last one and the jump is taken
from ``NumberOfSkippedImages`` alone, so ``frame_id`` never repeats within one ``open()``.

Grab strategy: ``LatestImages`` with an output queue of half the buffers. While the capture
process keeps up (it only copies frames into the ring buffer) every frame is delivered in order,
as with ``OneByOne``; when it falls behind, the oldest queued frames are discarded and counted,
never the newest, and the driver always has free buffers, so the camera never stalls.

Timestamps: ``TimeStamp`` ticks, in ns at ``GevTimestampTickFrequency`` where the camera has
it (GigE), or at 1 GHz on SFNC 2 cameras (USB3 Vision, ace 2, boost). A tick count of 0 (the
pylon camera emulator) is no timestamp: ``t_camera_ns`` is -1.

Unplugged: ``read()`` raises :class:`CameraStalled` while the camera is away and tries to open
it again by serial number once a second; when it is back, with the same settings, frames go on.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np

from .base import Camera, CameraError, CameraStalled, Frame

INSTALL_HINT = "Basler cameras need pypylon: pip install pypylon"
#: trigger settings: "" keeps the camera's, "off" runs free, else an input line and its edge
TRIGGER_PATTERN = re.compile(r"^(|off|line[1-4](:(rising|falling|any))?)$")
_EDGES = {"rising": "RisingEdge", "falling": "FallingEdge", "any": "AnyEdge"}
_WAIT_S = 1.0  # longest read() waits for a frame before saying the camera is stalled
RETRY_S = 1.0  # seconds between attempts to reopen an unplugged camera
_NO_BLOCK_ID = 2**64 - 1  # what pylon reports where the transport has no block id


def _setting(default, check=None, expect: str = ""):
    """A field with the check the settings apply when they read it (``streamer.config``)."""
    return field(default=default, metadata={"check": check, "expect": expect})


@dataclass(frozen=True)
class PylonSettings:
    """What facestream sets on a Basler camera; each field at its default keeps the camera's own."""

    features_file: str = _setting("")
    exposure_us: float = _setting(0.0, lambda v: 0 <= v <= 1e8, "0..1e8 microseconds")
    gain_db: float = _setting(-1.0, lambda v: v == -1 or 0 <= v <= 100, "-1 or 0..100 dB")
    roi: tuple[int, ...] = _setting((), lambda v: not v or (len(v) == 4 and v[0] >= 0 and v[1] >= 0 and v[2] >= 1 and v[3] >= 1),
                                    "[] or [offset_x, offset_y, width, height], offsets >= 0, sizes >= 1")
    pixel_format: str = _setting("", lambda v: not v or v.isalnum(), 'a pixel format name such as "Mono8"')
    fps: float = _setting(0.0, lambda v: 0 <= v <= 100000, "0..100000")
    trigger: str = _setting("", lambda v: bool(TRIGGER_PATTERN.match(v)),
                            '"", "off" or "line1".."line4" with ":rising", ":falling" or ":any"')
    buffers: int = _setting(16, lambda v: 2 <= v <= 1000, "2..1000")


def _pylon():
    try:
        from pypylon import genicam, pylon
    except ImportError:
        raise CameraError(INSTALL_HINT) from None
    return pylon, genicam


def _one_line(error: Exception) -> str:
    """A GenICam message without its 'RuntimeException thrown (file ..., line ...)' tail."""
    text = " ".join(str(error).split())
    return re.sub(r"\s*:?\s*\w+Exception thrown\b.*$", "", text) or type(error).__name__


def list_cameras() -> list[dict]:
    """Every device pylon sees (real cameras and emulated ones), as plain dicts."""
    pylon, _ = _pylon()
    return [
        {
            "spec": f"pylon:{d.GetSerialNumber()}",
            "serial": d.GetSerialNumber(),
            "model": d.GetModelName(),
            "vendor": d.GetVendorName(),
            "interface": d.GetDeviceClass(),
        }
        for d in pylon.TlFactory.GetInstance().EnumerateDevices()
    ]


class PylonCamera(Camera):
    """A Basler camera: the one with ``serial``, or the first pylon finds when ``serial`` is ''."""

    name = "pylon"

    def __init__(self, serial: str = "", settings: PylonSettings = PylonSettings()) -> None:
        self.serial = serial.strip()
        self.settings = settings
        self.reconnects = 0
        self._camera = None  # pylon.InstantCamera while connected
        self._converter = None  # to Mono8, for every other pixel format
        self._is_open = False
        self._device: dict = {}
        self._shape: tuple[int, int] | None = None
        self._fps = 0.0
        self._tick_hz = 0
        self._last_id = -1
        self._last_block: int | None = None
        self._removed: str | None = None  # why frames stopped, while the camera is away
        self._next_attempt = 0.0

    # -- the Camera interface ------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        if self._shape is None:
            raise CameraError(f"{self._label()}: not open")
        return self._shape

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def instant_camera(self):
        """The pypylon ``InstantCamera`` (None while unplugged), for features facestream does not set."""
        return self._camera

    def open(self) -> None:
        self.close()
        self._connect(self.serial)
        self._is_open = True
        self._last_id, self._last_block = -1, None
        self.reconnects = 0

    def close(self) -> None:
        self._is_open = False
        self._disconnect()

    def describe(self) -> dict:
        s = self.settings
        return {
            **super().describe(), **self._device, "grab_strategy": "LatestImages",
            "buffers": s.buffers, "timestamp_tick_hz": self._tick_hz or None,
        }

    def read(self) -> Frame | None:
        if not self._is_open:
            raise CameraError(f"{self._label()}: read() before open()")
        if self._camera is None:
            self._reopen()
        pylon, genicam = _pylon()
        deadline = time.monotonic() + _WAIT_S
        while True:
            wait_ms = max(int((deadline - time.monotonic()) * 1000), 0)
            try:
                result = self._camera.RetrieveResult(wait_ms, pylon.TimeoutHandling_Return)
            except genicam.GenericException as e:
                if self._camera.IsCameraDeviceRemoved():
                    self._lost()
                raise CameraError(f"{self._label()}: grabbing failed: {_one_line(e)}") from None
            valid = result.IsValid()
            try:
                removed = self._camera.IsCameraDeviceRemoved()
                # a failed grab (incomplete transfer) shows as a jump in the next block id
                frame = self._frame(result) if valid and not removed and result.GrabSucceeded() else None
            finally:
                if valid:
                    result.Release()
            if removed:
                self._lost()
            if not valid:
                raise CameraStalled(self._waiting())
            if frame is not None:
                return frame

    # -- connecting ------------------------------------------------------------------------
    def _label(self) -> str:
        return f"pylon:{self.serial}" if self.serial else "pylon"

    def _find(self, serial: str):
        pylon, genicam = _pylon()
        try:
            devices = pylon.TlFactory.GetInstance().EnumerateDevices()
        except genicam.GenericException as e:
            raise CameraError(f"{self._label()}: pylon cannot list cameras: {_one_line(e)}") from None
        if not serial:
            if not devices:
                raise CameraError("pylon: no Basler camera found (`facestream cameras` lists what pylon sees)")
            return devices[0]
        for device in devices:
            if device.GetSerialNumber() == serial:
                return device
        found = ", ".join(d.GetSerialNumber() for d in devices) or "none"
        raise CameraError(f"pylon:{serial}: no Basler camera with this serial number (found: {found})")

    def _connect(self, serial: str) -> None:
        pylon, genicam = _pylon()
        info = self._find(serial)
        try:
            camera = pylon.InstantCamera(pylon.TlFactory.GetInstance().CreateDevice(info))
            camera.Open()
        except genicam.GenericException as e:
            raise CameraError(f"{self._label()}: cannot open the camera: {_one_line(e)}") from None
        self._camera = camera
        try:
            self._configure()
            settings = self._read_back()
            camera.MaxNumBuffer.SetValue(self.settings.buffers)
            camera.OutputQueueSize.SetValue(max(1, self.settings.buffers // 2))
            camera.StartGrabbing(pylon.GrabStrategy_LatestImages)
        except CameraError:
            self._disconnect()
            raise
        except genicam.GenericException as e:
            self._disconnect()
            raise CameraError(f"{self._label()}: cannot start grabbing: {_one_line(e)}") from None
        self._device = {
            "serial": info.GetSerialNumber(), "model": info.GetModelName(), "interface": info.GetDeviceClass(),
            **settings,
        }

    def _disconnect(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        _, genicam = _pylon()
        for step in (camera.StopGrabbing, camera.Close, camera.DestroyDevice):
            try:
                step()
            except genicam.GenericException:
                pass  # an unplugged camera cannot be stopped; its handle is freed all the same

    def _lost(self) -> None:
        serial = self._device.get("serial", self.serial)
        self._disconnect()
        self._removed = f"camera {serial} was removed; reopening it every {RETRY_S:g} s"
        self._next_attempt = time.monotonic() + RETRY_S
        raise CameraStalled(self._removed)

    def _reopen(self) -> None:
        now = time.monotonic()
        if now < self._next_attempt:
            time.sleep(min(self._next_attempt - now, _WAIT_S))
            raise CameraStalled(self._removed)
        self._next_attempt = now + RETRY_S
        shape = self._shape
        try:
            self._connect(self._device.get("serial", self.serial))
        except CameraError:
            raise CameraStalled(self._removed) from None
        if self._shape != shape:
            self._disconnect()
            raise CameraError(f"{self._label()}: reopened with frames of {self._shape}, not {shape}")
        self._removed = None
        self._last_block = None
        self.reconnects += 1

    def _waiting(self) -> str:
        trigger = self.settings.trigger
        if trigger.startswith("line") or (not trigger and self._trigger_on()):
            return f"no frame for {_WAIT_S:g} s: waiting for the camera's trigger"
        return f"no frame for {_WAIT_S:g} s"

    # -- settings ----------------------------------------------------------------------------
    def _node(self, *names: str):
        """The first of these features the camera has (SFNC 2 name first, then SFNC 1), or None."""
        nodemap = self._camera.GetNodeMap()
        for name in names:
            node = nodemap.GetNode(name)
            if node.IsValid() and node.IsReadable():
                return node
        return None

    def _set(self, setting: str, value, *names: str) -> None:
        _, genicam = _pylon()
        node = self._node(*names)
        if node is None or not node.IsWritable():
            raise CameraError(f"{self._label()}: this camera has no writable {names[0]} for {setting}")
        try:
            node.SetValue(value)
        except genicam.GenericException as e:
            raise CameraError(f"{self._label()}: {setting} = {value!r}: {_one_line(e)}") from None

    def _trigger_on(self) -> bool:
        node = self._node("TriggerMode")
        return node is not None and node.GetValue() == "On"

    def _configure(self) -> None:
        pylon, genicam = _pylon()
        s = self.settings
        if s.features_file:
            try:
                pylon.FeaturePersistence.Load(s.features_file, self._camera.GetNodeMap(), True)
            except genicam.GenericException as e:
                raise CameraError(f"{self._label()}: features file {s.features_file}: {_one_line(e)}") from None
        if s.roi:
            x, y, w, h = s.roi
            self._set("roi offset", 0, "OffsetX")
            self._set("roi offset", 0, "OffsetY")
            self._set("roi width", w, "Width")
            self._set("roi height", h, "Height")
            self._set("roi offset x", x, "OffsetX")
            self._set("roi offset y", y, "OffsetY")
        if s.pixel_format:
            self._set("pixel_format", s.pixel_format, "PixelFormat")
        if s.exposure_us > 0:
            if self._node("ExposureAuto") is not None:
                self._set("exposure_us", "Off", "ExposureAuto")
            self._set("exposure_us", s.exposure_us, "ExposureTime", "ExposureTimeAbs")
        if s.gain_db >= 0:
            if self._node("GainAuto") is not None:
                self._set("gain_db", "Off", "GainAuto")
            self._set("gain_db", s.gain_db, "Gain", "GainAbs")
        if s.trigger:
            self._set("trigger", "FrameStart", "TriggerSelector")
            line, _, edge = s.trigger.partition(":")
            if line != "off":
                self._set("trigger", line.capitalize(), "TriggerSource")
                self._set("trigger", _EDGES[edge or "rising"], "TriggerActivation")
            self._set("trigger", "Off" if line == "off" else "On", "TriggerMode")
        if s.fps > 0:
            self._set("fps", True, "AcquisitionFrameRateEnable")
            self._set("fps", s.fps, "AcquisitionFrameRate", "AcquisitionFrameRateAbs")

    def _read_back(self) -> dict:
        """Frame shape, rate, pixel conversion and tick rate as the camera now has them; the
        settings it ended up with, for ``describe()``."""
        pylon, _ = _pylon()
        self._shape = (int(self._node("Height").GetValue()), int(self._node("Width").GetValue()))
        rate = self._node("ResultingFrameRate", "ResultingFrameRateAbs")
        self._fps = 0.0 if self._trigger_on() or rate is None else round(float(rate.GetValue()), 3)
        pixel_format = self._node("PixelFormat").GetValue()
        if pixel_format == "Mono8":
            self._converter = None
        else:
            self._converter = pylon.ImageFormatConverter()
            self._converter.OutputPixelFormat = pylon.PixelType_Mono8
        tick = self._node("GevTimestampTickFrequency")
        sfnc = self._node("DeviceSFNCVersionMajor")
        self._tick_hz = int(tick.GetValue()) if tick else (10**9 if sfnc and sfnc.GetValue() >= 2 else 0)
        exposure = self._node("ExposureTime", "ExposureTimeAbs")
        gain = self._node("Gain", "GainAbs")
        trigger = "off"
        if self._trigger_on():
            edge = {v: k for k, v in _EDGES.items()}.get(self._node("TriggerActivation").GetValue(), "other edge")
            trigger = f"{self._node('TriggerSource').GetValue().lower()}:{edge}"
        return {
            "roi": [int(self._node(n).GetValue()) for n in ("OffsetX", "OffsetY", "Width", "Height")],
            "pixel_format": pixel_format, "trigger": trigger,
            "exposure_us": None if exposure is None else float(exposure.GetValue()),
            "gain_db": None if gain is None else float(gain.GetValue()),
        }

    # -- frames ----------------------------------------------------------------------------------
    def _frame(self, result) -> Frame:
        t_capture_ns = time.monotonic_ns()
        block, skipped = int(result.BlockID), int(result.NumberOfSkippedImages)
        if self._last_id < 0:
            frame_id, dropped = (block if block != _NO_BLOCK_ID else 0), 0
        else:
            jumped = self._last_block is not None and block != _NO_BLOCK_ID and block > self._last_block
            dropped = block - self._last_block - 1 if jumped else skipped
            frame_id = self._last_id + 1 + dropped
        self._last_id, self._last_block = frame_id, block
        if self._converter is not None:
            pixels = self._converter.Convert(result).GetArray()
        else:
            pixels = result.GetArray()
        ticks = int(result.TimeStamp)
        t_camera_ns = ticks * 10**9 // self._tick_hz if ticks and self._tick_hz else -1
        return Frame(np.ascontiguousarray(pixels), frame_id, t_capture_ns, t_camera_ns, dropped)
