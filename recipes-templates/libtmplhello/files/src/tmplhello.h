/* SPDX-License-Identifier: MIT */
#ifndef TMPLHELLO_H
#define TMPLHELLO_H
/* the greeting of the platform's library */
const char *tmplhello_greeting(void);
#endif
