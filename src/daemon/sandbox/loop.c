/* See loop.h. */
#include "daemon/sandbox/loop.h"
#include <fcntl.h>
#include <linux/loop.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int loop_attach(int file, bool readonly, char dev[32], struct hx_err *e)
{
    autoclose int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return hx_fail(e, errno, "open /dev/loop-control: %m");
    /* Another process may take the number between GET_FREE and CONFIGURE. */
    for (int tries = 0; tries < 16; tries++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0)
            return hx_fail(e, errno, "no free loop device: %m");
        snprintf(dev, 32, "/dev/loop%d", n);
        int fd = open(dev, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (fd < 0)
            return hx_fail(e, errno, "open %s: %m", dev);
        struct loop_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.fd = (uint32_t)file;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (readonly ? LO_FLAGS_READ_ONLY : 0);
        if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0)
            return fd;
        int err = errno;
        close(fd);
        if (err != EBUSY)
            return hx_fail(e, err, "configure %s: %s", dev, strerror(err));
    }
    return hx_fail(e, EBUSY, "every free loop device was taken first");
}
