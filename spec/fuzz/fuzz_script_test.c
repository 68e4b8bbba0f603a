/*
 * fuzz_script_test: `--script-test`'s whole path (core/script_test.c: read,
 * YAML/JSON decode, the CRD's pruning/defaulting/validation, the embedded
 * policies' validate, render and status, the managed-kinds check, the
 * output) on any input as the DittoServer file; odd sizes ask for JSON
 * output. The properties are script_check.h's.
 */
#include "script_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    script_check(data, size, (int)(size & 1));
    return 0;
}
