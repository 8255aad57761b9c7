// Host stand-in for CUDA's header: the kernels include it; bone_host.h supplies the types.
#pragma once
#include "bone_host.h"
