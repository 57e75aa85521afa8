#pragma once
#include "sarqc/objective/objective.h"

namespace sarqc {

// GPTQ's objective (docs/methods.md §5.1): M = H_d, W_ref = W.
class PlainObjective : public Objective {
 public:
  std::string name() const override { return "plain"; }
  ObjectiveOutput build(const ObjectiveInput& in) const override {
    return {in.damped, in.weight};
  }
};

}  // namespace sarqc
