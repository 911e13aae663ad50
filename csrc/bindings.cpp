// nanobind glue for rbm_cuda._cuda: the only file that knows about Python.
#include <nanobind/nanobind.h>

#include "device_info.h"

namespace nb = nanobind;

NB_MODULE(_cuda, m) {
    m.doc() = "rbm_cuda CUDA kernels (device pointers are passed as integers)";
    m.def("runtime_version", &rbm::runtime_version, "CUDA runtime version linked into the module");
    m.def("driver_version", &rbm::driver_version, "CUDA driver version, 0 when no driver is present");
    m.def("device_count", &rbm::device_count, "number of CUDA devices; raises RuntimeError without a driver");
}
