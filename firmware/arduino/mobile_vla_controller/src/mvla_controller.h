/* The controller side of docs/serial-protocol.md (version 1), in portable C99.
 *
 *     mvla_config cfg;
 *     mvla_config_defaults(&cfg);
 *     mvla_mecanum(&cfg, 0.04f, 0.10f, 0.10f);          // or mvla_omni3 / mvla_differential
 *     mvla_controller ctl;
 *     mvla_init(&ctl, &cfg, write_bytes, set_motors, user, millis());
 *     mvla_announce(&ctl);                               // READY, once after boot
 *     loop: mvla_feed(&ctl, bytes, n, millis()); mvla_tick(&ctl, millis());
 *
 * No OS calls, no heap, no stdio: bytes come in through mvla_feed, replies go out
 * through the write callback, wheel duties through the motor callback, and the
 * caller passes a millisecond clock (Arduino's millis(), CLOCK_MONOTONIC on a
 * host). The clock may wrap at 2^32 ms; every comparison is wrap-safe.
 * Built by firmware/Makefile, firmware/host/ (a pty and a stdin harness) and the
 * Arduino sketch in firmware/arduino/.
 */
#ifndef MVLA_CONTROLLER_H
#define MVLA_CONTROLLER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MVLA_VERSION 1
#define MVLA_MAX_VERSION 15     /* a header claiming 0 or more is garbage and skipped */
#define MVLA_MAX_PAYLOAD 32
#define MVLA_HEADER 6           /* sync(2) version seq type length */
#define MVLA_MAX_FRAME (MVLA_HEADER + MVLA_MAX_PAYLOAD + 2)
#define MVLA_MAX_WHEELS 4
#define MVLA_WATCHDOG_CAP_MS 1000  /* no motion command runs longer than this without the next one */

enum mvla_type {
    MVLA_SET_VELOCITY = 0x01,
    MVLA_STOP = 0x02,
    MVLA_HEARTBEAT = 0x03,
    MVLA_QUERY_STATUS = 0x04,
    MVLA_SET_WHEELS = 0x05,
    MVLA_QUERY_INFO = 0x06,
    MVLA_READY = 0x80,
    MVLA_ACK = 0x81,
    MVLA_NACK = 0x82,
    MVLA_STATUS = 0x84,
    MVLA_INFO = 0x85
};

enum mvla_error {
    MVLA_ERR_BAD_PAYLOAD = 1,
    MVLA_ERR_UNKNOWN_COMMAND = 2,
    MVLA_ERR_BAD_VERSION = 3,
    MVLA_ERR_OUT_OF_RANGE = 4,
    MVLA_ERR_UNVERIFIED = 5     /* a motion command before the first QUERY_INFO since boot */
};

/* INFO's base kind: derived from the matrix (a base whose wheels ignore vy is differential). */
enum mvla_base_kind { MVLA_BASE_UNKNOWN = 0, MVLA_BASE_HOLONOMIC = 1, MVLA_BASE_DIFFERENTIAL = 2 };

enum mvla_flag { MVLA_FLAG_MOVING = 1, MVLA_FLAG_WATCHDOG_TRIPPED = 2 };

/* Why the body velocity changed; reported to the optional event callback. */
enum mvla_event {
    MVLA_EV_SET_VELOCITY, MVLA_EV_SET_WHEELS, MVLA_EV_STOP, MVLA_EV_WATCHDOG, MVLA_EV_REFUSED, MVLA_EV_LINK_LOST
};

typedef struct {
    uint8_t wheels;                       /* 2..4 */
    float matrix[MVLA_MAX_WHEELS][3];     /* wheel rad/s = matrix . (vx, vy, wz), as runtime/kinematics.py */
    float max_linear;                     /* m/s: |vx| or |vy| above it is refused (NACK 4) */
    float max_angular;                    /* rad/s: |wz| above it is refused */
    float max_wheel;                      /* rad/s at full duty: SET_WHEELS above it is refused; body
                                             commands that need more are scaled down on all wheels alike */
    uint16_t default_watchdog_ms;         /* used when a command carries 0 before any carried a timeout */
    uint16_t max_watchdog_ms;             /* the cap on every motion's timeout; mvla_init clamps it to
                                             1..MVLA_WATCHDOG_CAP_MS (0 there means the cap) */
} mvla_config;

typedef void (*mvla_write_fn)(void *user, const uint8_t *bytes, size_t n);
/* duty[i] in [-1, 1] for wheel i (the base's order); called on every change, zeros included. */
typedef void (*mvla_motor_fn)(void *user, const float *duty, uint8_t wheels);
typedef void (*mvla_event_fn)(void *user, int event, float vx, float vy, float wz);

typedef struct {
    mvla_config cfg;
    mvla_write_fn write;
    mvla_motor_fn motors;
    mvla_event_fn event;                  /* optional (NULL): logging on a host */
    void *user;
    uint8_t buf[MVLA_MAX_FRAME];
    uint8_t len;
    float velocity[3];                    /* body velocity in force (commanded or from SET_WHEELS) */
    float duty[MVLA_MAX_WHEELS];
    uint32_t boot_ms;
    uint32_t deadline_ms;
    uint16_t timeout_ms;                  /* the last timeout a command carried (capped) */
    uint8_t armed;                        /* a deadline is set */
    uint8_t tripped;
    uint8_t info_asked;                   /* QUERY_INFO came since boot: motion commands are applied */
    uint8_t base_kind;                    /* enum mvla_base_kind, from cfg.matrix */
    uint16_t bad_crc;
    uint32_t frames;                      /* valid frames handled */
} mvla_controller;

void mvla_config_defaults(mvla_config *cfg);       /* mecanum of runtime/kinematics.py, limits as the spec,
                                                      500 ms default watchdog, 1000 ms cap */
void mvla_mecanum(mvla_config *cfg, float wheel_radius, float half_length, float half_width);
void mvla_omni3(mvla_config *cfg, float wheel_radius, float base_radius, float first_wheel_deg);
void mvla_differential(mvla_config *cfg, float wheel_radius, float track_width);

void mvla_init(mvla_controller *c, const mvla_config *cfg, mvla_write_fn write, mvla_motor_fn motors,
               void *user, uint32_t now_ms);
void mvla_announce(mvla_controller *c);            /* sends READY (seq 0) */
void mvla_feed(mvla_controller *c, const uint8_t *data, size_t n, uint32_t now_ms);
void mvla_tick(mvla_controller *c, uint32_t now_ms);   /* call often: the watchdog lives here */
void mvla_link_lost(mvla_controller *c);           /* serial link gone (USB unplugged): stop at once */
uint16_t mvla_crc16(const uint8_t *data, size_t n, uint16_t crc);

#ifdef __cplusplus
}
#endif
#endif
