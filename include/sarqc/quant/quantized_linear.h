#pragma once
// What a rounding backend produces for one linear module: integer codes and the per-group grid,
// in the layout the GPTQ format stores (docs/formats.md §3, §6).
#include <cstdint>

#include <ATen/core/Tensor.h>

#include "sarqc/quant/grid.h"

namespace sarqc {

struct QuantizedLinear {
  QuantGrid grid;
  at::Tensor codes;   // [m, n] int32 in [0, maxq]
  at::Tensor scales;  // [G, m] fp32, each value exactly representable in fp16
  at::Tensor zeros;   // [G, m] int32 true zero points in [0, maxq]
  at::Tensor g_idx;   // [n] int32: row of scales/zeros for each input column
  double loss = 0;    // E(Q) = tr((Q − T) M (Q − T)ᵀ) reported by the backend

  int64_t out_features() const { return codes.size(0); }
  int64_t in_features() const { return codes.size(1); }
  // W[o, i] = scales[g_idx[i], o] · (codes[o, i] − zeros[g_idx[i], o]), fp32 [m, n].
  at::Tensor dequantize() const;
  // Whether g_idx differs from i // g (act-order without static groups): desc_act must be true.
  bool reordered() const;
};

}  // namespace sarqc
