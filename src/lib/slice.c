/* EEVDF custom slices (slice.h). */
#include "lib/slice.h"
#include <errno.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

/* struct sched_attr as the kernel defines it (glibc before 2.41 has no
 * wrapper or type); SCHED_ATTR_SIZE_VER1 = 56 bytes with the uclamp pair. */
struct hx_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime; /* SCHED_OTHER since 6.12: the slice requested, ns */
    uint64_t sched_deadline;
    uint64_t sched_period;
    uint32_t sched_util_min;
    uint32_t sched_util_max;
};
#define HX_SCHED_FLAG_RESET_ON_FORK 0x01

int hx_sched_slice(pid_t pid, uint32_t slice_us, bool reset_on_fork)
{
    struct hx_sched_attr a = {.size = sizeof a, .sched_policy = SCHED_OTHER,
                              .sched_flags = slice_us && reset_on_fork ? HX_SCHED_FLAG_RESET_ON_FORK : 0,
                              .sched_runtime = (uint64_t)slice_us * 1000};
    if (syscall(SYS_sched_setattr, pid, &a, 0) < 0)
        return -errno;
    return 0;
}
