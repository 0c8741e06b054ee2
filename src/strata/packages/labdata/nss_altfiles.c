/* A minimal NSS module "altfiles" for the lab distribution: users and groups from /usr/lib/passwd and
 * /usr/lib/group, where OSTree-style trees keep their system accounts (nsswitch: "passwd: files altfiles"). */
#include <errno.h>
#include <grp.h>
#include <nss.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>

#define PASSWD_PATH "/usr/lib/passwd"
#define GROUP_PATH "/usr/lib/group"

static FILE *pw_stream, *gr_stream;

static enum nss_status finish(int rc, int *errnop) {
    if (rc == 0) return NSS_STATUS_SUCCESS;
    if (rc == ERANGE) { *errnop = ERANGE; return NSS_STATUS_TRYAGAIN; }
    *errnop = ENOENT;
    return NSS_STATUS_NOTFOUND;
}

static enum nss_status find_pw(const char *name, uid_t uid, struct passwd *pwd, char *buf, size_t len, int *errnop) {
    FILE *f = fopen(PASSWD_PATH, "re");
    struct passwd *found;
    int rc;
    if (!f) { *errnop = ENOENT; return NSS_STATUS_UNAVAIL; }
    while ((rc = fgetpwent_r(f, pwd, buf, len, &found)) == 0)
        if (name ? strcmp(found->pw_name, name) == 0 : found->pw_uid == uid) break;
    fclose(f);
    return finish(rc, errnop);
}

static enum nss_status find_gr(const char *name, gid_t gid, struct group *grp, char *buf, size_t len, int *errnop) {
    FILE *f = fopen(GROUP_PATH, "re");
    struct group *found;
    int rc;
    if (!f) { *errnop = ENOENT; return NSS_STATUS_UNAVAIL; }
    while ((rc = fgetgrent_r(f, grp, buf, len, &found)) == 0)
        if (name ? strcmp(found->gr_name, name) == 0 : found->gr_gid == gid) break;
    fclose(f);
    return finish(rc, errnop);
}

enum nss_status _nss_altfiles_getpwnam_r(const char *n, struct passwd *p, char *b, size_t l, int *e) { return find_pw(n, 0, p, b, l, e); }
enum nss_status _nss_altfiles_getpwuid_r(uid_t u, struct passwd *p, char *b, size_t l, int *e) { return find_pw(NULL, u, p, b, l, e); }
enum nss_status _nss_altfiles_getgrnam_r(const char *n, struct group *g, char *b, size_t l, int *e) { return find_gr(n, 0, g, b, l, e); }
enum nss_status _nss_altfiles_getgrgid_r(gid_t i, struct group *g, char *b, size_t l, int *e) { return find_gr(NULL, i, g, b, l, e); }

enum nss_status _nss_altfiles_setpwent(int stayopen) {
    (void)stayopen;
    if (pw_stream) fclose(pw_stream);
    pw_stream = fopen(PASSWD_PATH, "re");
    return pw_stream ? NSS_STATUS_SUCCESS : NSS_STATUS_UNAVAIL;
}
enum nss_status _nss_altfiles_endpwent(void) {
    if (pw_stream) fclose(pw_stream);
    pw_stream = NULL;
    return NSS_STATUS_SUCCESS;
}
enum nss_status _nss_altfiles_getpwent_r(struct passwd *p, char *b, size_t l, int *e) {
    struct passwd *found;
    if (!pw_stream && _nss_altfiles_setpwent(0) != NSS_STATUS_SUCCESS) return NSS_STATUS_UNAVAIL;
    return finish(fgetpwent_r(pw_stream, p, b, l, &found), e);
}
enum nss_status _nss_altfiles_setgrent(int stayopen) {
    (void)stayopen;
    if (gr_stream) fclose(gr_stream);
    gr_stream = fopen(GROUP_PATH, "re");
    return gr_stream ? NSS_STATUS_SUCCESS : NSS_STATUS_UNAVAIL;
}
enum nss_status _nss_altfiles_endgrent(void) {
    if (gr_stream) fclose(gr_stream);
    gr_stream = NULL;
    return NSS_STATUS_SUCCESS;
}
enum nss_status _nss_altfiles_getgrent_r(struct group *g, char *b, size_t l, int *e) {
    struct group *found;
    if (!gr_stream && _nss_altfiles_setgrent(0) != NSS_STATUS_SUCCESS) return NSS_STATUS_UNAVAIL;
    return finish(fgetgrent_r(gr_stream, g, b, l, &found), e);
}
