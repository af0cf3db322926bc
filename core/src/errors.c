/* errors.c — code names and error messages. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *scsictl_code_name(int code)
{
    switch (code) {
    case SCSICTL_PERSIST: return "persist";
    case SCSICTL_STEP: return "step";
    case SCSICTL_DONE: return "done";
    case SCSICTL_OK: return "ok";
    case SCSICTL_E_NOT_FOUND: return "not_found";
    case SCSICTL_E_NO_SLOTS: return "no_slots";
    case SCSICTL_E_CONFIG_MISMATCH: return "config_mismatch";
    case SCSICTL_E_SLOT_TAKEN: return "slot_taken";
    case SCSICTL_E_OUT_OF_RANGE: return "out_of_range";
    case SCSICTL_E_BUSY: return "busy";
    case SCSICTL_E_BACKEND: return "backend";
    case SCSICTL_E_CLOSED: return "closed";
    case SCSICTL_E_INVALID_SNAPSHOT: return "invalid_snapshot";
    case SCSICTL_E_INVALID_ARGUMENT: return "invalid_argument";
    case SCSICTL_E_NO_MEMORY: return "no_memory";
    case SCSICTL_E_IO: return "io";
    default: return "unknown";
    }
}

int sc_fail(scsictl_error *err, int code, const char *fmt, ...)
{
    if (err) {
        err->code = (scsictl_code)code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}
