#ifndef CDC_CLMDB_SHIM_H
#define CDC_CLMDB_SHIM_H
#include <lmdb.h>
#endif
