#pragma once

namespace rbm {
int runtime_version();  // e.g. 13000 for CUDA 13.0
int driver_version();   // 0 when no driver is installed
int device_count();     // throws std::runtime_error when the driver is missing or too old
}  // namespace rbm
