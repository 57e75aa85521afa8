#include <gtest/gtest.h>

#include <ATen/Parallel.h>

int main(int argc, char** argv) {
  // ctest runs test processes in parallel; one ATen thread each avoids oversubscription.
  at::set_num_threads(1);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
