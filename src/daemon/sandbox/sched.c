/* EEVDF custom slices for hutch's control path (sched.h). */
#include "daemon/sandbox/sched.h"
#include "lib/slice.h"
#include <errno.h>
#include <string.h>

int sched_control_slice(pid_t pid, uint32_t slice_us, struct hx_err *e)
{
    int r = hx_sched_slice(pid, slice_us, true);
    if (r < 0)
        return hx_fail(e, -r, "sched_setattr(pid %d, slice %u us): %s", (int)pid, slice_us, strerror(-r));
    return 0;
}
