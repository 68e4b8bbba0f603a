/* Placeholder main until the script-test work lands. */
#include <stdio.h>

int main(void)
{
    puts("dittofs-operator");
    return 0;
}
