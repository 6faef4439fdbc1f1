/* hutch ssh: POST /api/v3/sandbox/ID/expose/ssh (as the SDK's exposeSsh
 * does), then runs the system ssh with that login name, host and port.
 * The host key comes from the same API answer and is written to hutch's own
 * known_hosts file, so ssh checks it strictly instead of asking the user
 * (docs/ssh.md). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

static const char help[] =
    "usage: hutch ssh ID [-- CMD [ARGS...]]\n"
    "\n"
    "Exposes the sandbox over SSH (if it is not yet) and runs the system ssh\n"
    "into it: a login shell as app, or CMD. The login name hutchd hands out is\n"
    "the only credential (as the SDK's exposeSsh documents). The host key comes\n"
    "from hutchd's API and is kept in $XDG_CONFIG_HOME/hutch/known_hosts\n"
    "(~/.config/hutch/known_hosts), which ssh then checks strictly.\n"
    "Exits with ssh's status (the command's, or 255 for an SSH error).\n"
    "      --endpoint URL, --token TOKEN   see 'hutch --help'\n";

static bool only(const char *s, const char *set, size_t max)
{
    size_t n = strlen(s);
    return n > 0 && n <= max && strspn(s, set) == n;
}

/* Replaces the entry for host_field in FILE with "host_field key" (written to a temporary file, then renamed). */
static int write_known_host(const char *file, const char *host_field, const char *key, struct hx_err *e)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", file, (int)getpid());
    FILE *out = NULL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || !(out = fdopen(fd, "w"))) {
        if (fd >= 0)
            close(fd);
        return hx_fail(e, errno, "write %s: %s", tmp, strerror(errno));
    }
    FILE *in = fopen(file, "re");
    size_t hl = strlen(host_field);
    if (in) {
        char line[8192];
        while (fgets(line, sizeof line, in))
            if (!(strncmp(line, host_field, hl) == 0 && line[hl] == ' '))
                fputs(line, out);
        fclose(in);
    }
    fprintf(out, "%s %s\n", host_field, key);
    if (fclose(out) != 0 || rename(tmp, file) != 0) {
        int err = errno;
        unlink(tmp);
        return hx_fail(e, err, "write %s: %s", file, strerror(err));
    }
    return 0;
}

static int known_hosts_path(char *out, size_t cap, struct hx_err *e)
{
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    char dir[4096];
    if (xdg && *xdg == '/')
        snprintf(dir, sizeof dir, "%s/hutch", xdg);
    else if (home && *home == '/')
        snprintf(dir, sizeof dir, "%s/.config/hutch", home);
    else
        return hx_fail(e, ENOENT, "neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the host key");
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        mkdir(parent, 0700); /* ~/.config */
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return hx_fail(e, errno, "mkdir %s: %s", dir, strerror(errno));
    snprintf(out, cap, "%s/known_hosts", dir);
    return 0;
}

int cmd_ssh(struct cli *cli, int argc, char **argv)
{
    int parsed = cli_common_only(cli, "ssh", help, argc, argv);
    if (parsed >= 0)
        return parsed;
    if (argc - optind < 1)
        return cli_usage("ssh", "expected ID");
    const char *id = argv[optind];
    if (!only(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", 100))
        return cli_error("ssh: invalid sandbox id '%.100s'", id);
    int first = optind + 1;
    if (first < argc && strcmp(argv[first], "--") == 0)
        first++;
    struct hx_err e = {0};
    struct hutch_target t;
    if (cli_target(cli, &t, &e) < 0)
        return cli_error("ssh: %s", e.msg);
    char path[160];
    snprintf(path, sizeof path, "/api/v3/sandbox/%s/expose/ssh", id);
    json_t *body = json_object(), *res = NULL;
    int rc = hutch_rest(&t, "POST", path, body, &res, &e);
    json_decref(body);
    hutch_target_free(&t);
    if (rc < 0)
        return cli_error("ssh %s: %s", id, e.msg);
    const char *host = json_string_value(json_object_get(res, "hostname"));
    const char *user = json_string_value(json_object_get(res, "username"));
    const char *key = json_string_value(json_object_get(res, "hostKey"));
    json_int_t port = json_integer_value(json_object_get(res, "port"));
    /* what goes into ssh's argv and the known_hosts file is checked, not trusted */
    if (!host || !user || !key || port < 1 || port > 65535 ||
        !only(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:", 253) || host[0] == '-' ||
        !only(user, "abcdefghijklmnopqrstuvwxyz0123456789", 64) ||
        !only(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-+/=@. ", 1024) ||
        strchr(key, ' ') != strrchr(key, ' ')) {
        json_decref(res);
        return cli_error("ssh %s: the server's answer lacks a usable hostname, username, port or hostKey", id);
    }
    char file[4200], host_field[300], portstr[8], uk[4300], dest[400];
    if (known_hosts_path(file, sizeof file, &e) < 0) {
        json_decref(res);
        return cli_error("ssh: %s", e.msg);
    }
    bool v6 = strchr(host, ':') != NULL;
    if (port == 22 && !v6)
        snprintf(host_field, sizeof host_field, "%s", host);
    else
        snprintf(host_field, sizeof host_field, "[%s]:%d", host, (int)port);
    if (write_known_host(file, host_field, key, &e) < 0) {
        json_decref(res);
        return cli_error("ssh: %s", e.msg);
    }
    snprintf(portstr, sizeof portstr, "%d", (int)port);
    snprintf(uk, sizeof uk, "UserKnownHostsFile=%s", file);
    snprintf(dest, sizeof dest, "%s@%s", user, host);
    json_decref(res);
    size_t ncmd = (size_t)(argc - first);
    char **av = calloc(12 + ncmd + 1, sizeof *av);
    if (!av)
        return cli_error("ssh: out of memory");
    size_t n = 0;
    av[n++] = "ssh";
    av[n++] = "-p";
    av[n++] = portstr;
    av[n++] = "-o";
    av[n++] = uk;
    av[n++] = "-o";
    av[n++] = "StrictHostKeyChecking=yes";
    av[n++] = "-o";
    av[n++] = "CheckHostIP=no";
    av[n++] = dest;
    if (ncmd)
        av[n++] = "--";
    for (int i = first; i < argc; i++)
        av[n++] = argv[i];
    av[n] = NULL;
    fflush(stdout);
    execvp("ssh", av);
    int err = errno;
    free(av);
    return cli_error("ssh: cannot run ssh: %s (Debian: apt install openssh-client)", strerror(err));
}
