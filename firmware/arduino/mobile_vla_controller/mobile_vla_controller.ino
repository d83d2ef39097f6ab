/* Mobile VLA Edge motor controller: docs/serial-protocol.md on an Arduino-style board.
 *
 *     Arduino IDE: open this folder and build (src/ holds the core, copied from firmware/)
 *     make -C firmware sketch          # refreshes src/ after a change to firmware/mvla_controller.{c,h}
 *     arduino-cli compile -b arduino:avr:uno firmware/arduino/mobile_vla_controller
 *     arduino-cli upload -b arduino:avr:uno -p /dev/ttyUSB0 firmware/arduino/mobile_vla_controller
 *     python -m runtime.drive --serial /dev/mobile-vla-motor ...
 *
 * The protocol, the watchdog and the kinematics live in src/mvla_controller.c (the same file the
 * tests compile on the host); this sketch only wires it to the UART, millis() and the motor driver,
 * and enables the AVR hardware watchdog: an MCU that hangs (a stuck loop, a corrupted stack) runs
 * no command watchdog and would keep its PWM; the hardware one resets it within WDT_TIMEOUT, and a
 * reset stops the motors (pins go high-impedance, then setup() drives them to zero).
 * Written for a 4-wheel mecanum base on two dual H-bridges (TB6612FNG or L298N: PWM + IN1 + IN2
 * per wheel) on an Uno/Nano; a PWM+DIR driver (Cytron MDD10A, many BLDC drivers) sets in2 to NO_PIN.
 * For an omni3 or differential base change BASE_SETUP and the pin table. docs/firmware.md says
 * what is and is not wiring-specific.
 */
#include <avr/wdt.h>

#include "src/mvla_controller.h"

/* -- the base: must match the host's runtime/kinematics.py (--wheels) and your robot ----------- */
#define BAUD 115200
#define WHEEL_RADIUS_M 0.04f
#define HALF_LENGTH_M 0.10f    /* centre to axle, along x */
#define HALF_WIDTH_M 0.10f     /* centre to wheel, along y */
#define MAX_WHEEL_RAD_S 30.0f  /* wheel speed at full PWM on your battery (a 300 rpm gear motor: 31) */
#define BASE_SETUP(cfg) mvla_mecanum(cfg, WHEEL_RADIUS_M, HALF_LENGTH_M, HALF_WIDTH_M)
/* The hardware watchdog: loop() runs in well under 1 ms (a 64-byte read and the parser), so 250 ms
 * only ever fires on a hang. Boards whose bootloader predates watchdog resets (the old Nano
 * bootloader) loop in reset after one: flash Optiboot (the Uno's) first, docs/firmware.md. */
#define WDT_TIMEOUT WDTO_250MS

/* -- the wiring: the only board-specific part ---------------------------------------------- */
static const uint8_t NO_PIN = 255;
struct WheelPins {
    uint8_t pwm;    /* a PWM-capable pin (Uno: 3 5 6 9 10 11) */
    uint8_t in1;    /* direction (PWM+DIR drivers: DIR) */
    uint8_t in2;    /* second direction input of an H-bridge, or NO_PIN */
    bool reversed;  /* a motor mounted mirrored (usually the right side) */
};
static const WheelPins WHEELS[4] = {
    /* front-left, front-right, rear-left, rear-right: the order of runtime/kinematics.py */
    {3, 2, 4, false},
    {5, 7, 8, true},
    {6, 12, 13, false},
    {9, 14, 15, true},  /* 14, 15 = A0, A1 used as digital outputs */
};

static mvla_controller ctl;

/* Signed duty in [-1, 1] to one wheel. Zero is coast (both inputs low): a TB6612 brakes with both
 * high, which stops faster but jerks the base; the watchdog's stop is meant to be gentle. */
static void setWheel(uint8_t i, float duty) {
    const WheelPins &w = WHEELS[i];
    if (w.reversed) duty = -duty;
    float magnitude = duty < 0 ? -duty : duty;
    int pwm = (int)(magnitude * 255.0f + 0.5f);
    if (pwm > 255) pwm = 255;
    if (w.in2 == NO_PIN) {
        digitalWrite(w.in1, duty < 0 ? LOW : HIGH);
    } else {
        digitalWrite(w.in1, duty > 0 ? HIGH : LOW);
        digitalWrite(w.in2, duty < 0 ? HIGH : LOW);
    }
    analogWrite(w.pwm, pwm);
}

static void onMotors(void *user, const float *duty, uint8_t wheels) {
    (void)user;
    for (uint8_t i = 0; i < wheels && i < 4; i++) setWheel(i, duty[i]);
}

static void onWrite(void *user, const uint8_t *bytes, size_t n) {
    (void)user;
    Serial.write(bytes, n);
}

void setup() {
    /* After a watchdog reset the watchdog stays enabled (at its shortest timeout) until cleared:
     * clear the reset cause and disable it first, so a slow setup() cannot reset again. */
    MCUSR = 0;
    wdt_disable();
    /* Motors off before anything else: pins float at reset and some drivers read that as "go". */
    for (uint8_t i = 0; i < 4; i++) {
        pinMode(WHEELS[i].pwm, OUTPUT);
        pinMode(WHEELS[i].in1, OUTPUT);
        if (WHEELS[i].in2 != NO_PIN) pinMode(WHEELS[i].in2, OUTPUT);
        setWheel(i, 0.0f);
    }
    mvla_config cfg;
    mvla_config_defaults(&cfg);
    BASE_SETUP(&cfg);
    cfg.max_wheel = MAX_WHEEL_RAD_S;
    Serial.begin(BAUD);
    mvla_init(&ctl, &cfg, onWrite, onMotors, NULL, millis());
    mvla_announce(&ctl);  /* READY: the host waits for it after a reset on open */
    wdt_enable(WDT_TIMEOUT);
}

void loop() {
    wdt_reset();  /* the loop came round: not hung */
    uint8_t buf[64];
    size_t n = 0;
    while (n < sizeof buf && Serial.available() > 0) buf[n++] = (uint8_t)Serial.read();
    if (n) mvla_feed(&ctl, buf, n, millis());
    mvla_tick(&ctl, millis());  /* the watchdog: zero when commands stop */
}
