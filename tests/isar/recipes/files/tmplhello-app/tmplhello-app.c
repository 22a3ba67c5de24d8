/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <tmplhello.h>

int main(void)
{
	printf("tmplhello-app: %s\n", tmplhello_greeting());
	return 0;
}
