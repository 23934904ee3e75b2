/* A facestream subscriber in C, with libzmq and msgpack-c (Debian: libzmq3-dev libmsgpack-dev).
 *
 *   cc -O2 -o facestream_sub facestream_sub.c $(pkg-config --cflags --libs libzmq msgpack)
 *   ./facestream_sub [ENDPOINT] [COUNT]      (defaults: tcp://127.0.0.1:5555, 0 = forever)
 *
 * For every frame message it prints one JSON line on stdout:
 *   {"age_ms": A, "nose_tip": [x, y, likelihood], "message": {every field of the message}}
 * where age_ms is this host's CLOCK_MONOTONIC now minus t_capture_ns (the publisher's clock:
 * meaningful on the same host only). find() and the typed reads below are what a stimulus
 * program needs; print_json() shows that every field decodes with plain msgpack-c.
 */
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define NOSE_TIP 8 /* index of nose(tip) in meta.bodyparts, Facemap's order */

static int64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The value stored under `key` in a msgpack map, or NULL. */
static const msgpack_object *find(const msgpack_object *map, const char *key) {
    if (map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static double as_double(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return o->via.f64;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return (double)o->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return (double)o->via.i64;
    default: return 0.0;
    }
}

static void print_string(const char *s, uint32_t n) {
    putchar('"');
    for (uint32_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* Any msgpack object as JSON; floats with 17 significant digits, so they read back exactly. */
static void print_json(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: printf("null"); break;
    case MSGPACK_OBJECT_BOOLEAN: printf(o->via.boolean ? "true" : "false"); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: printf("%" PRIu64, o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: printf("%" PRId64, o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: printf("%.17g", o->via.f64); break;
    case MSGPACK_OBJECT_STR: print_string(o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_ARRAY:
        putchar('[');
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) putchar(',');
            print_json(&o->via.array.ptr[i]);
        }
        putchar(']');
        break;
    case MSGPACK_OBJECT_MAP:
        putchar('{');
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i) putchar(',');
            print_json(&o->via.map.ptr[i].key);
            putchar(':');
            print_json(&o->via.map.ptr[i].val);
        }
        putchar('}');
        break;
    default: printf("null"); /* protocol v1 has no binary or extension types */
    }
}

int main(int argc, char **argv) {
    const char *endpoint = argc > 1 ? argv[1] : "tcp://127.0.0.1:5555";
    long count = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
    void *ctx = zmq_ctx_new();
    void *sub = zmq_socket(ctx, ZMQ_SUB);
    int linger = 0;
    zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "frame", 5);
    if (zmq_connect(sub, endpoint) != 0) {
        fprintf(stderr, "facestream_sub: cannot connect to %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        return 1;
    }
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    for (long seen = 0; count == 0 || seen < count;) {
        zmq_msg_t topic, payload;
        zmq_msg_init(&topic);
        zmq_msg_init(&payload);
        if (zmq_msg_recv(&topic, sub, 0) < 0 || !zmq_msg_more(&topic) || zmq_msg_recv(&payload, sub, 0) < 0) {
            fprintf(stderr, "facestream_sub: receive failed: %s\n", zmq_strerror(zmq_errno()));
            return 1;
        }
        int64_t now = monotonic_ns();
        const char *data = zmq_msg_data(&payload);
        size_t size = zmq_msg_size(&payload);
        if (size && data[0] == '{') {
            fprintf(stderr, "facestream_sub: the stream is JSON (--encoding json); this program reads msgpack\n");
            return 1;
        }
        if (msgpack_unpack_next(&msg, data, size, NULL) != MSGPACK_UNPACK_SUCCESS) {
            fprintf(stderr, "facestream_sub: undecodable payload\n");
            return 1;
        }
        const msgpack_object *m = &msg.data;
        const msgpack_object *v = find(m, "v"), *t_capture = find(m, "t_capture_ns"), *kp = find(m, "keypoints");
        if (!v || v->via.u64 != 1 || !t_capture || !kp || kp->type != MSGPACK_OBJECT_ARRAY || kp->via.array.size <= NOSE_TIP
            || kp->via.array.ptr[NOSE_TIP].type != MSGPACK_OBJECT_ARRAY || kp->via.array.ptr[NOSE_TIP].via.array.size != 3) {
            fprintf(stderr, "facestream_sub: not a protocol v1 frame message\n");
            return 1;
        }
        double age_ms = (double)(now - (int64_t)t_capture->via.u64) / 1e6;
        const msgpack_object *tip = kp->via.array.ptr[NOSE_TIP].via.array.ptr; /* [x, y, likelihood] */
        printf("{\"age_ms\":%.6f,\"nose_tip\":[%.17g,%.17g,%.17g],\"message\":", age_ms,
               as_double(&tip[0]), as_double(&tip[1]), as_double(&tip[2]));
        print_json(m);
        printf("}\n");
        fflush(stdout);
        zmq_msg_close(&topic);
        zmq_msg_close(&payload);
        seen++;
    }
    msgpack_unpacked_destroy(&msg);
    zmq_close(sub);
    zmq_ctx_term(ctx);
    return 0;
}
