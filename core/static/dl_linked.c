/*
 * dl_linked: dl.h for a binary that links libcurl, libcrypto and
 * libmicrohttpd (the static image build, cmake -DSTATIC=ON). It replaces
 * core/dl.c there: the core's curl_*, OpenSSL and MHD_* calls bind to the
 * linked libraries, so there is nothing to load and every library is
 * usable. Kept out of core/ so the normal build's glob never picks it up.
 */
#include "dl.h"

int dl_curl_load(void)
{
    return 0;
}

int dl_crypto_load(void)
{
    return 0;
}

int dl_mhd_load(void)
{
    return 0;
}
