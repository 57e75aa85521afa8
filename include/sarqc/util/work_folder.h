#pragma once
// Where a resumable run builds its output: "<parent>/.NAME.sarqc-work/" beside the final folder
// NAME, a name a rerun of the same command finds again. It holds
//   out/         the output being built, renamed to NAME by publish()
//   state/       what the run saved after its last completed step (the caller's files)
//   lock         flock()ed by the process working here (released by the kernel when it dies)
//   publishing   present once the output is complete and publish() has begun
// A run that fails or is killed keeps the folder when keep() was called (it has a state worth
// resuming); otherwise the folder and the parent folders it created are removed.
#include <filesystem>

namespace sarqc {

class WorkFolder {
 public:
  enum class Existing { Refuse, Replace };  // an existing final folder: refused, or replaced
  // Checks the final folder (a usage error unless Replace or a publish of the earlier run is
  // pending), creates or reopens the work folder and locks it (a usage error while another
  // process holds it).
  WorkFolder(std::filesystem::path final_path, Existing existing);
  ~WorkFolder();
  WorkFolder(const WorkFolder&) = delete;
  WorkFolder& operator=(const WorkFolder&) = delete;

  // The work folder of `final_path` (what the constructor opens), for processes that use a
  // folder another process owns (the other ranks of a distributed run).
  static std::filesystem::path root_for(const std::filesystem::path& final_path);

  const std::filesystem::path& final_path() const { return final_; }
  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path output() const { return root_ / "out"; }
  std::filesystem::path state() const { return root_ / "state"; }
  // Whether the folder was left by an earlier run (it may hold a state).
  bool found() const { return found_; }
  // An earlier run completed its output and was stopped while publishing it.
  bool publish_pending() const;

  // Empties the folder (out/ and state/ recreated empty): a fresh start.
  void reset();
  // From now on a failure keeps the folder for a rerun.
  void keep() { keep_ = true; }
  // The folder is removed when this object is destroyed unpublished, whatever it holds.
  void discard() { keep_ = false; }
  // Moves out/ to the final path (an existing final folder is moved aside first and deleted
  // once the new one is in place), then removes the work folder. Each step is made durable
  // before the next (fsync of the parent folder), and a rerun finishes an interrupted publish.
  void publish();

 private:
  std::filesystem::path final_, root_;
  std::filesystem::path created_;  // the outermost parent folder this object created, if any
  int lock_fd_ = -1;
  bool found_ = false, keep_ = false, published_ = false;
};

}  // namespace sarqc
