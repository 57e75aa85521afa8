#pragma once
// A rounding backend turns a target W_ref and a metric M (from a calibration objective) into
// integer codes on a QuantGrid, minimising row by row E(Q) = tr((Q − W_ref) M (Q − W_ref)ᵀ).
// Adding a backend is one file defining a Rounder plus one line in rounder.cpp's registry.
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "sarqc/quant/quantized_linear.h"
#include "sarqc/rounding/column_order.h"

namespace sarqc {

// Defaults are the product's (README, BENCHMARKS.md "Real models"): group-aware order with
// block-start group parameters won on SmolLM2; tests that compare with the textbook algorithm
// ask for natural order and current values.
struct RoundingOptions {
  ColumnOrder order = ColumnOrder::group_aware;  // which column each backend decides first
  bool static_groups = false;  // group parameters fixed from the target before any update
  // GPTQ, a group that starts inside a lazy block: its parameters from the block-start values
  // of its columns (the reference gptq.py and GPTQModel read W, not the block's W1) instead of
  // the values after this block's earlier decisions.
  bool block_start_group_params = true;
  int64_t block_size = 128;    // GPTQ lazy-update block; successive/beam decoding block
  int64_t beam_width = 4;      // beam backend: decodings kept per row
  int64_t beam_rows = 0;  // beam backend: rows decoded together; 0 = from the memory budget
  int64_t beam_budget_bytes = int64_t{256} << 20;  // beam backend: state per chunk of rows
  // Successive/beam decoders: CPU tensors take the fused per-row kernel; otherwise width 1 takes
  // a greedy loop and wider beams the batched decoder. Tests switch these off to compare them.
  bool fused_cpu_beam = true;
  bool greedy_fast_path = true;
  // GPTQ: CPU tensors take the fused per-row block kernel; otherwise the per-column ATen loop
  // (CUDA). Both make the same decisions; tests switch this off to compare them.
  bool fused_cpu_gptq = true;
};

// Thrown when M is not positive definite enough to factor; the pipeline raises the damping and
// retries (docs/methods.md §4).
class FactorizationFailed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Element-wise drift penalty Σ_ij weight_ij (anchor_ij − Q_ij)² added to E(Q) (element-wise
// SARQC, docs/methods.md §5.2), for the backends that decide one entry at a time.
struct EntryPenalty {
  at::Tensor weight;  // [m, n] λ'·s_ij, undefined for none
  at::Tensor anchor;  // [m, n] the original weights W
};

class Rounder {
 public:
  virtual ~Rounder() = default;
  virtual std::string name() const = 0;
  // Whether the backend uses the metric at all (RTN does not: no calibration needed).
  virtual bool needs_metric() const { return true; }
  // target: [m, n] floating (fp32, or fp64 in tests); metric: [n, n] symmetric positive
  // definite in the same dtype, or undefined when !needs_metric().
  virtual QuantizedLinear round(const at::Tensor& target, const at::Tensor& metric,
                                const QuantGrid& grid, const RoundingOptions& options) const = 0;
  virtual bool supports_entry_penalty() const { return false; }
  // round() minimising E(Q) + the penalty; reported loss includes the penalty.
  virtual QuantizedLinear round_penalized(const at::Tensor& target, const at::Tensor& metric,
                                          const QuantGrid& grid, const RoundingOptions& options,
                                          const EntryPenalty& penalty) const;
};

// "rtn", "gptq", "successive", "beam"; throws a usage error listing the known names.
std::unique_ptr<Rounder> make_rounder(const std::string& name);
std::vector<std::string> rounder_names();

// Shared by backends: the GPTQ output layout from codes and per-group params collected in
// processing order. `perm` maps processing position -> column (identity without reordering).
// When every natural group of columns was processed as one contiguous processing group (natural
// and group-aware orders), the params are put in natural group order and g_idx is the trivial
// one, which inference kernels need for their fast path.
QuantizedLinear assemble_quantized(const QuantGrid& grid, const at::Tensor& codes_processing,
                                   const std::vector<at::Tensor>& scales,
                                   const std::vector<at::Tensor>& zeros, const at::Tensor& perm,
                                   bool groups_in_processing_order);

}  // namespace sarqc
