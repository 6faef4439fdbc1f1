/* See fds.h. */
#include "lib/fds.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

int hx_fds_open(void)
{
    /* Linux >= 6.2 gives the count as the size of /proc/self/fd (a popcount
     * of the open-fd bitmap, however many are open); before, 0. */
    struct stat st;
    if (stat("/proc/self/fd", &st) < 0)
        return -errno;
    if (st.st_size > 0)
        return (int)st.st_size;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -errno;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

int hx_fds_room(long open, long limit, long want, long reserve)
{
    return open >= 0 && want >= 0 && reserve >= 0 && open + want + reserve <= limit ? 0 : -EMFILE;
}
