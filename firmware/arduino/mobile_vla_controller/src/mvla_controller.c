/* The controller side of docs/serial-protocol.md: see mvla_controller.h for how it is driven.
 *
 * Parsing mirrors runtime/protocol.py's FrameParser byte for byte, so garbage, a bad CRC or a
 * truncated frame costs the frames it overlaps and nothing else. Float fields are IEEE-754
 * binary32 little-endian on the wire; they are assembled from bytes, so the code is the same
 * on a little- or big-endian MCU (AVR, ARM, x86 all use binary32 for float).
 */
#include "mvla_controller.h"

#include <math.h>
#include <string.h>

static float absf(float x) { return x < 0.0f ? -x : x; }

/* CRC-16/CCITT-FALSE, bitwise: 20 lines of flash instead of a 512-byte table on an AVR. */
uint16_t mvla_crc16(const uint8_t *data, size_t n, uint16_t crc) {
    size_t i;
    int b;
    for (i = 0; i < n; i++) {
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (b = 0; b < 8; b++)
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

static float get_f32(const uint8_t *p) {
    uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void put_f32(uint8_t *p, float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    p[0] = (uint8_t)u; p[1] = (uint8_t)(u >> 8); p[2] = (uint8_t)(u >> 16); p[3] = (uint8_t)(u >> 24);
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* -- kinematics: the same matrices as runtime/kinematics.py ------------------------------------ */

void mvla_mecanum(mvla_config *cfg, float r, float half_length, float half_width) {
    static const float sign[4][3] = {{1, -1, -1}, {1, 1, 1}, {1, 1, -1}, {1, -1, 1}};  /* FL FR RL RR */
    float k = half_length + half_width;
    int i;
    cfg->wheels = 4;
    for (i = 0; i < 4; i++) {
        cfg->matrix[i][0] = sign[i][0] / r;
        cfg->matrix[i][1] = sign[i][1] / r;
        cfg->matrix[i][2] = sign[i][2] * k / r;
    }
}

void mvla_omni3(mvla_config *cfg, float r, float base_radius, float first_wheel_deg) {
    int i;
    cfg->wheels = 3;
    for (i = 0; i < 3; i++) {
        double a = (first_wheel_deg + 120.0 * i) * 3.14159265358979323846 / 180.0;
        cfg->matrix[i][0] = (float)(-sin(a) / r);
        cfg->matrix[i][1] = (float)(cos(a) / r);
        cfg->matrix[i][2] = base_radius / r;
    }
    for (i = 0; i < 3; i++) cfg->matrix[3][i] = 0.0f;
}

void mvla_differential(mvla_config *cfg, float r, float track_width) {
    int i, j;
    cfg->wheels = 2;
    cfg->matrix[0][0] = 1.0f / r; cfg->matrix[0][1] = 0.0f; cfg->matrix[0][2] = -track_width / 2.0f / r;
    cfg->matrix[1][0] = 1.0f / r; cfg->matrix[1][1] = 0.0f; cfg->matrix[1][2] = track_width / 2.0f / r;
    for (i = 2; i < 4; i++)
        for (j = 0; j < 3; j++) cfg->matrix[i][j] = 0.0f;
}

void mvla_config_defaults(mvla_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    mvla_mecanum(cfg, 0.04f, 0.10f, 0.10f);
    cfg->max_linear = 2.0f;
    cfg->max_angular = 6.0f;
    cfg->max_wheel = 100.0f;
    cfg->default_watchdog_ms = 500;
    cfg->max_watchdog_ms = MVLA_WATCHDOG_CAP_MS;
}

/* Least-squares body velocity from wheel speeds (what numpy's pinv gives runtime/kinematics.py):
 * normal equations, Gauss-Jordan; an axis the base cannot move along (a differential's vy) has
 * an all-zero column, a zero pivot, and stays 0. */
static void wheels_to_body(const mvla_config *cfg, const float *w, float out[3]) {
    double a[3][4];
    int i, j, k, row;
    for (i = 0; i < 3; i++) {
        for (j = 0; j < 3; j++) {
            a[i][j] = 0.0;
            for (k = 0; k < cfg->wheels; k++) a[i][j] += (double)cfg->matrix[k][i] * cfg->matrix[k][j];
        }
        a[i][3] = 0.0;
        for (k = 0; k < cfg->wheels; k++) a[i][3] += (double)cfg->matrix[k][i] * w[k];
    }
    for (i = 0; i < 3; i++) out[i] = 0.0f;
    for (i = 0; i < 3; i++) {
        int best = i;
        double piv;
        for (row = i + 1; row < 3; row++)
            if ((a[row][i] < 0 ? -a[row][i] : a[row][i]) > (a[best][i] < 0 ? -a[best][i] : a[best][i])) best = row;
        if (best != i)
            for (j = 0; j < 4; j++) { double t = a[i][j]; a[i][j] = a[best][j]; a[best][j] = t; }
        piv = a[i][i];
        if ((piv < 0 ? -piv : piv) < 1e-9) continue;
        for (row = 0; row < 3; row++) {
            double f;
            if (row == i) continue;
            f = a[row][i] / piv;
            for (j = i; j < 4; j++) a[row][j] -= f * a[i][j];
        }
    }
    for (i = 0; i < 3; i++) {
        double piv = a[i][i];
        if ((piv < 0 ? -piv : piv) >= 1e-9) out[i] = (float)(a[i][3] / piv);
    }
}

/* -- output ------------------------------------------------------------------------------------ */

static void send_frame(mvla_controller *c, uint8_t type, uint8_t seq, const uint8_t *payload, uint8_t n) {
    uint8_t out[MVLA_MAX_FRAME];
    uint16_t crc;
    out[0] = 0xAA; out[1] = 0x55; out[2] = MVLA_VERSION; out[3] = seq; out[4] = type; out[5] = n;
    if (n) memcpy(out + MVLA_HEADER, payload, n);
    crc = mvla_crc16(out + 2, (size_t)(4 + n), 0xFFFF);
    out[MVLA_HEADER + n] = (uint8_t)crc;
    out[MVLA_HEADER + n + 1] = (uint8_t)(crc >> 8);
    c->write(c->user, out, (size_t)(MVLA_HEADER + n + 2));
}

static void reply(mvla_controller *c, uint8_t type, uint8_t seq, uint8_t code) {
    uint8_t p[2];
    p[0] = seq; p[1] = code;
    send_frame(c, type, seq, p, 2);
}

static void drive_wheels(mvla_controller *c, const float *wheel) {
    float peak = 0.0f, scale = 1.0f;
    int i;
    if (!(c->cfg.max_wheel > 0.0f)) {  /* a misconfigured board does not move at all */
        for (i = 0; i < c->cfg.wheels; i++) c->duty[i] = 0.0f;
        c->motors(c->user, c->duty, c->cfg.wheels);
        return;
    }
    for (i = 0; i < c->cfg.wheels; i++)
        if (absf(wheel[i]) > peak) peak = absf(wheel[i]);
    if (peak > c->cfg.max_wheel) scale = c->cfg.max_wheel / peak;  /* keep the direction, lose speed */
    for (i = 0; i < c->cfg.wheels; i++) c->duty[i] = wheel[i] * scale / c->cfg.max_wheel;
    c->motors(c->user, c->duty, c->cfg.wheels);
}

static void apply_body(mvla_controller *c, float vx, float vy, float wz, int event) {
    float wheel[MVLA_MAX_WHEELS];
    int i;
    c->velocity[0] = vx; c->velocity[1] = vy; c->velocity[2] = wz;
    for (i = 0; i < c->cfg.wheels; i++)
        wheel[i] = c->cfg.matrix[i][0] * vx + c->cfg.matrix[i][1] * vy + c->cfg.matrix[i][2] * wz;
    drive_wheels(c, wheel);
    if (c->event) c->event(c->user, event, vx, vy, wz);
}

static void zero(mvla_controller *c, int event) {
    c->armed = 0;
    apply_body(c, 0.0f, 0.0f, 0.0f, event);
}

static int moving(const mvla_controller *c) {
    return c->velocity[0] != 0.0f || c->velocity[1] != 0.0f || c->velocity[2] != 0.0f;
}

/* A motion command's deadline: its own timeout (0: the last one carried, or the default before any), never
 * longer than the cap, whatever the host asked. Only motion commands call this: a HEARTBEAT answers but never
 * moves the deadline, so a host that hangs while its heartbeat thread lives still stops the robot. */
static void arm(mvla_controller *c, uint16_t timeout_ms, uint32_t now) {
    if (timeout_ms) c->timeout_ms = timeout_ms < c->cfg.max_watchdog_ms ? timeout_ms : c->cfg.max_watchdog_ms;
    c->deadline_ms = now + (c->timeout_ms ? c->timeout_ms : c->cfg.default_watchdog_ms);
    c->armed = 1;
    c->tripped = 0;
}

/* A refused motion command stops the motors, whatever the reason (a bad length, another wheel count, NaN,
 * beyond the limits): the host reads any NACK to a motion command as "the robot is at zero now". */
static void refuse(mvla_controller *c, uint8_t seq, uint8_t code) {
    zero(c, MVLA_EV_REFUSED);
    reply(c, MVLA_NACK, seq, code);
}

#define MVLA_INFO_BYTES 19

static void info_payload(const mvla_controller *c, uint8_t p[MVLA_INFO_BYTES]) {
    p[0] = MVLA_VERSION;
    p[1] = c->cfg.wheels;
    p[2] = (uint8_t)c->cfg.default_watchdog_ms;
    p[3] = (uint8_t)(c->cfg.default_watchdog_ms >> 8);
    put_f32(p + 4, c->cfg.max_linear);
    put_f32(p + 8, c->cfg.max_angular);
    put_f32(p + 12, c->cfg.max_wheel);
    p[16] = c->base_kind;  /* after the 16 bytes of the first INFO: an older host reads those and stops */
    p[17] = (uint8_t)c->cfg.max_watchdog_ms;
    p[18] = (uint8_t)(c->cfg.max_watchdog_ms >> 8);
}

/* -- commands ---------------------------------------------------------------------------------- */

static void handle(mvla_controller *c, uint8_t version, uint8_t seq, uint8_t type, const uint8_t *p, uint8_t n,
                   uint32_t now) {
    c->frames++;
    if (version != MVLA_VERSION) { reply(c, MVLA_NACK, seq, MVLA_ERR_BAD_VERSION); return; }
    /* A board that (re)started applies no motion until the host has asked what it is: a host that missed
       the READY (or never checks) would otherwise resume a motion on a board it has not verified. */
    if ((type == MVLA_SET_VELOCITY || type == MVLA_SET_WHEELS) && !c->info_asked) {
        refuse(c, seq, MVLA_ERR_UNVERIFIED);
        return;
    }
    switch (type) {
    case MVLA_SET_VELOCITY: {
        float vx, vy, wz;
        if (n != 14) { refuse(c, seq, MVLA_ERR_BAD_PAYLOAD); return; }
        vx = get_f32(p); vy = get_f32(p + 4); wz = get_f32(p + 8);
        /* NaN fails every comparison, so "!(x <= max)" refuses NaN and inf alike. A host that
           sends one is broken: stop rather than keep the previous command running. */
        if (!(absf(vx) <= c->cfg.max_linear) || !(absf(vy) <= c->cfg.max_linear) ||
            !(absf(wz) <= c->cfg.max_angular)) {
            refuse(c, seq, MVLA_ERR_OUT_OF_RANGE);
            return;
        }
        arm(c, get_u16(p + 12), now);
        apply_body(c, vx, vy, wz, MVLA_EV_SET_VELOCITY);
        break;
    }
    case MVLA_SET_WHEELS: {
        float wheel[MVLA_MAX_WHEELS], body[3];
        int i;
        if (n < 1 || p[0] != c->cfg.wheels || n != 1 + 4 * p[0] + 2) {
            refuse(c, seq, MVLA_ERR_BAD_PAYLOAD);
            return;
        }
        for (i = 0; i < c->cfg.wheels; i++) {
            wheel[i] = get_f32(p + 1 + 4 * i);
            if (!(absf(wheel[i]) <= c->cfg.max_wheel)) {
                refuse(c, seq, MVLA_ERR_OUT_OF_RANGE);
                return;
            }
        }
        arm(c, get_u16(p + 1 + 4 * c->cfg.wheels), now);
        wheels_to_body(&c->cfg, wheel, body);
        c->velocity[0] = body[0]; c->velocity[1] = body[1]; c->velocity[2] = body[2];
        drive_wheels(c, wheel);
        if (c->event) c->event(c->user, MVLA_EV_SET_WHEELS, body[0], body[1], body[2]);
        break;
    }
    case MVLA_STOP:  /* any payload: a stop is always honoured */
        zero(c, MVLA_EV_STOP);
        break;
    case MVLA_HEARTBEAT:  /* the link is alive; the motion's deadline stays where its command put it */
        break;
    case MVLA_QUERY_STATUS: {
        uint8_t s[19];
        uint32_t up = now - c->boot_ms;
        s[0] = (uint8_t)((moving(c) ? MVLA_FLAG_MOVING : 0) | (c->tripped ? MVLA_FLAG_WATCHDOG_TRIPPED : 0));
        put_f32(s + 1, c->velocity[0]); put_f32(s + 5, c->velocity[1]); put_f32(s + 9, c->velocity[2]);
        s[13] = (uint8_t)up; s[14] = (uint8_t)(up >> 8); s[15] = (uint8_t)(up >> 16); s[16] = (uint8_t)(up >> 24);
        s[17] = (uint8_t)c->bad_crc; s[18] = (uint8_t)(c->bad_crc >> 8);
        send_frame(c, MVLA_STATUS, seq, s, sizeof s);
        return;
    }
    case MVLA_QUERY_INFO: {
        uint8_t s[MVLA_INFO_BYTES];
        c->info_asked = 1;
        info_payload(c, s);
        send_frame(c, MVLA_INFO, seq, s, sizeof s);
        return;
    }
    default:
        reply(c, MVLA_NACK, seq, MVLA_ERR_UNKNOWN_COMMAND);
        return;
    }
    reply(c, MVLA_ACK, seq, 0);
}

/* -- framing ----------------------------------------------------------------------------------- */

static void drop(mvla_controller *c, uint8_t k) {
    memmove(c->buf, c->buf + k, (size_t)(c->len - k));
    c->len = (uint8_t)(c->len - k);
}

static void process(mvla_controller *c, uint32_t now) {
    for (;;) {
        uint8_t i = 0, length, total;
        while (i + 1 < c->len && !(c->buf[i] == 0xAA && c->buf[i + 1] == 0x55)) i++;
        if (i + 1 >= c->len) {  /* no sync: keep a trailing 0xAA, it may start the next one */
            uint8_t keep = (c->len && c->buf[c->len - 1] == 0xAA) ? 1 : 0;
            drop(c, (uint8_t)(c->len - keep));
            return;
        }
        if (i) drop(c, i);
        if (c->len < MVLA_HEADER) return;
        length = c->buf[5];
        if (length > MVLA_MAX_PAYLOAD || c->buf[2] < 1 || c->buf[2] > MVLA_MAX_VERSION) {
            drop(c, 1);  /* not a header: skip this sync */
            continue;
        }
        total = (uint8_t)(MVLA_HEADER + length + 2);
        if (c->len < total) return;
        if (mvla_crc16(c->buf + 2, (size_t)(4 + length), 0xFFFF) != get_u16(c->buf + MVLA_HEADER + length)) {
            if (c->bad_crc != 0xFFFF) c->bad_crc++;
            drop(c, 1);  /* a real frame may start inside these bytes */
            continue;
        }
        {
            uint8_t frame[MVLA_MAX_FRAME];
            memcpy(frame, c->buf, total);
            drop(c, total);
            handle(c, frame[2], frame[3], frame[4], frame + MVLA_HEADER, length, now);
        }
    }
}

void mvla_feed(mvla_controller *c, const uint8_t *data, size_t n, uint32_t now_ms) {
    size_t i;
    mvla_tick(c, now_ms);
    for (i = 0; i < n; i++) {
        c->buf[c->len++] = data[i];  /* process() leaves fewer than MVLA_MAX_FRAME bytes */
        process(c, now_ms);
    }
}

void mvla_tick(mvla_controller *c, uint32_t now_ms) {
    if (c->armed && (int32_t)(now_ms - c->deadline_ms) >= 0) {
        c->armed = 0;
        c->tripped = 1;
        if (moving(c)) zero(c, MVLA_EV_WATCHDOG);
    }
}

void mvla_link_lost(mvla_controller *c) {
    zero(c, MVLA_EV_LINK_LOST);
}

void mvla_announce(mvla_controller *c) {
    uint8_t p[MVLA_INFO_BYTES];
    info_payload(c, p);
    send_frame(c, MVLA_READY, 0, p, 4);  /* READY carries the first four bytes of INFO */
}

void mvla_init(mvla_controller *c, const mvla_config *cfg, mvla_write_fn write, mvla_motor_fn motors, void *user,
               uint32_t now_ms) {
    int i;
    memset(c, 0, sizeof *c);
    c->cfg = *cfg;
    if (c->cfg.wheels < 1 || c->cfg.wheels > MVLA_MAX_WHEELS) c->cfg.wheels = 4;
    c->write = write;
    c->motors = motors;
    c->user = user;
    c->boot_ms = now_ms;
    if (c->cfg.max_watchdog_ms == 0 || c->cfg.max_watchdog_ms > MVLA_WATCHDOG_CAP_MS)
        c->cfg.max_watchdog_ms = MVLA_WATCHDOG_CAP_MS;
    if (c->cfg.default_watchdog_ms == 0 || c->cfg.default_watchdog_ms > c->cfg.max_watchdog_ms)
        c->cfg.default_watchdog_ms = c->cfg.max_watchdog_ms;
    c->base_kind = MVLA_BASE_DIFFERENTIAL;
    for (i = 0; i < c->cfg.wheels; i++)
        if (c->cfg.matrix[i][1] != 0.0f) c->base_kind = MVLA_BASE_HOLONOMIC;  /* some wheel follows vy */
    zero(c, MVLA_EV_STOP);  /* motors are at zero from the first instruction */
}
