# rbm_cuda._emu: the CUDA kernel source (csrc/kernels.cu, through csrc/kernels_emu.cpp) compiled by
# the host compiler with csrc/cuda_emulation.h, so every launch runs its grid on the CPU.  Built
# always, with or without nvcc; the `emulation` tests compare it with the Numba kernels.
# Included from the top-level CMakeLists.txt after nanobind is found; RBM_WARN_FLAGS come from there.
nanobind_add_module(_emu NB_STATIC
  ${CMAKE_CURRENT_LIST_DIR}/bindings.cpp
  ${CMAKE_CURRENT_LIST_DIR}/kernels_emu.cpp)
target_include_directories(_emu PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_compile_definitions(_emu PRIVATE RBM_CUDA_EMULATION=1)
target_compile_options(_emu PRIVATE ${RBM_WARN_FLAGS})
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  # No fused multiply-add contraction: the Numba twin rounds every product and sum separately, and
  # so does the emulation on every host (x86 without -mfma would anyway; aarch64 would not).
  target_compile_options(_emu PRIVATE -ffp-contract=off)
endif()
if(RBM_CUDA_SANITIZE)
  # AddressSanitizer and UBSan in the kernel source, standing in for compute-sanitizer: an
  # out-of-bounds access or undefined behaviour in a kernel aborts the process (.ci/sanitize_check.sh).
  set(RBM_SANITIZE_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g)
  target_compile_options(_emu PRIVATE ${RBM_SANITIZE_FLAGS})
  target_link_options(_emu PRIVATE ${RBM_SANITIZE_FLAGS})
  target_compile_definitions(_emu PRIVATE RBM_CUDA_SANITIZED=1)
endif()
# Kernel sources the emulation depends on, for IDEs; kernels_emu.cpp #includes kernels.cu.
set_property(SOURCE ${CMAKE_CURRENT_LIST_DIR}/kernels_emu.cpp APPEND PROPERTY OBJECT_DEPENDS
  ${CMAKE_CURRENT_LIST_DIR}/kernels.cu)
install(TARGETS _emu LIBRARY DESTINATION rbm_cuda)
