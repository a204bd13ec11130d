// The error convention of facekit's C++ shims (trainer/amp_shim.cpp, dist/c10d_shim.cpp): every
// extern "C" function runs its body through guarded(), which returns 0, or -1 with the C++
// exception's message kept in last_error for the shim's *_last_error() call. An exception
// unwinding into Rust frames would be undefined behaviour.
#pragma once

#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace facekit {

// Per thread: autocast state is thread-local in libtorch, and tests run ranks as threads.
inline thread_local std::string last_error;

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    // c10's what() appends the C++ stack ("Exception raised from ... frame #0 ..."), dozens of
    // lines that tell a user nothing; the message and its context are what they act on.
    last_error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return -1;
}

}  // namespace facekit
