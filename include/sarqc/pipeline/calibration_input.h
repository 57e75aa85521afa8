#pragma once
// The calibration windows of a quantize run, from --calib FILE, --calib self or --calib-tokens:
// sampled windows clamped to the model's positions, given windows checked against them, every
// id against the vocabulary, and the run refused before sampling when one activation stream of
// --nsamples x --seqlen windows cannot fit in memory.
#include "sarqc/calib/calibration_set.h"
#include "sarqc/model/weights.h"
#include "sarqc/pipeline/quantize.h"

namespace sarqc {

CalibrationSet load_calibration(const QuantizeOptions& o, const ModelWeights& weights);

}  // namespace sarqc
