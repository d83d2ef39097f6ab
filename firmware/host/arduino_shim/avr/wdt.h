/* avr-libc's <avr/wdt.h> for the host shim (firmware/host/arduino_shim/main.cpp implements it): the
 * same names and timeout constants, and a watchdog the tests can observe. It runs on wall time, as
 * the AVR's own oscillator does: if wdt_reset() is not called within the timeout, the "MCU" resets
 * (stderr "reset watchdog <ms>", every pin back to an input, MCUSR's WDRF set, the watchdog left on
 * at 15 ms as the AVR leaves it, then setup() again). The shim checks every 5 ms and fires only when
 * two checks in a row find the deadline passed, so a process the host OS merely descheduled is not
 * taken for a hung one. */
#ifndef MVLA_SHIM_AVR_WDT_H
#define MVLA_SHIM_AVR_WDT_H
#include <stdint.h>

#define WDTO_15MS 0
#define WDTO_30MS 1
#define WDTO_60MS 2
#define WDTO_120MS 3
#define WDTO_250MS 4
#define WDTO_500MS 5
#define WDTO_1S 6
#define WDTO_2S 7
#define WDTO_4S 8
#define WDTO_8S 9

void wdt_enable(uint8_t timeout);
void wdt_reset(void);
void wdt_disable(void); /* as on the AVR: no effect while MCUSR's WDRF is set */
#endif
