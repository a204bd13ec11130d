// dlib's HOG frontal face detector alone, on the images listed in argv[1], twice; prints the
// seconds of the second pass. Built by scripts/bench-dlib-flags.sh with several compiler flag sets
// to choose the flags for dlib-face-recognition's C++ (.cargo/config.toml).
#include <dlib/image_processing/frontal_face_detector.h>
#include <dlib/image_io.h>
#include <chrono>
#include <iostream>
#include <fstream>
int main(int argc, char** argv) {
    std::vector<dlib::matrix<dlib::rgb_pixel>> imgs;
    std::ifstream f(argv[1]); std::string p;
    while (std::getline(f, p)) { dlib::matrix<dlib::rgb_pixel> m; dlib::load_image(m, p); imgs.push_back(m); }
    auto det = dlib::get_frontal_face_detector();
    for (int rep = 0; rep < 2; rep++) {  // the first pass warms caches and the allocator
    auto t = std::chrono::steady_clock::now(); size_t n = 0;
    for (auto& m : imgs) n += det(m).size();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    std::cout << "detect1x " << s << " " << imgs.size() << " faces " << n << std::endl;
    }
}
