/*
 * The files of lua/, policies/ and crd/ compiled into the binary by
 * core/embed.cmake, so the binary alone is enough to run. Each entry is
 * named by its path relative to the repository root ("policies/x.lua").
 * The table ends with an entry whose name is NULL. Data is NUL-terminated
 * (len excludes the terminator). Uses nothing.
 */
#ifndef DITTOFS_EMBEDDED_H
#define DITTOFS_EMBEDDED_H

#include <stddef.h>

struct embedded_file {
    const char *name;
    const unsigned char *data;
    size_t len;
};

extern const struct embedded_file embedded_files[];
extern const size_t embedded_files_count;

/* Returns the embedded file named `name`, or NULL. */
const struct embedded_file *embedded_find(const char *name);

#endif
