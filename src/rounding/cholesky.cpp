#include "sarqc/rounding/cholesky.h"

#include <ATen/ATen.h>

namespace sarqc {
namespace {

// linalg_cholesky_ex reports failure in `info` instead of throwing.
at::Tensor checked_cholesky(const at::Tensor& matrix, bool upper, const char* what) {
  auto [factor, info] = at::linalg_cholesky_ex(matrix, upper);
  if (info.item<int64_t>() != 0 || !at::isfinite(factor).all().item<bool>())
    throw FactorizationFailed(std::string("Cholesky factorization of the ") + what + " failed");
  return factor;
}

}  // namespace

at::Tensor cholesky_lower(const at::Tensor& metric) {
  return checked_cholesky(metric, /*upper=*/false, "metric");
}

at::Tensor inverse_cholesky_upper(const at::Tensor& metric) {
  return checked_cholesky(at::cholesky_inverse(cholesky_lower(metric)), /*upper=*/true,
                          "inverse metric");
}

}  // namespace sarqc
