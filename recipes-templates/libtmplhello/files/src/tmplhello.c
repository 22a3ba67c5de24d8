/* SPDX-License-Identifier: MIT */
#include "tmplhello.h"

const char *tmplhello_greeting(void)
{
	return "hello from the platform's libtmplhello";
}
