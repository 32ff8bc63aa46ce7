#ifndef CDC_CLIBPQ_SHIM_H
#define CDC_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
