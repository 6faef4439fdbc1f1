/* Whether this build runs under AddressSanitizer (and so LeakSanitizer's
 * check at exit): GCC says __SANITIZE_ADDRESS__, clang __has_feature. Code
 * that changes how the process can be traced uses it to keep that check
 * working, or to skip it where it cannot work; release builds see nothing. */
#ifndef HX_LIB_SANITIZER_H
#define HX_LIB_SANITIZER_H

#if defined(__SANITIZE_ADDRESS__)
#define HX_LEAK_CHECKED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HX_LEAK_CHECKED 1
#endif
#endif

#endif
