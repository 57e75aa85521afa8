// `quantize` on several ranks (data-parallel calibration over c10d/Gloo on loopback): the
// statistics are exact sums over batches fixed by the calibration alone, so 2 and 3 ranks write
// the one-process run's bytes, whether the ranks come from --nproc or from the torchrun
// variables; a rank that dies makes the others exit in time, and the rerun resumes from the
// state every rank saved.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <sstream>
#include <thread>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/run_sarqc.h"
#include "test_support.h"

namespace sarqc {
namespace {

namespace fs = std::filesystem;
using test::RunResult;
using test::run_sarqc;

class Distributed : public ::testing::Test {
 protected:
  void SetUp() override { SARQC_REQUIRE_FIXTURES(); }
  std::vector<std::string> args(const fs::path& out, const std::vector<std::string>& extra) {
    std::vector<std::string> a = {"quantize", "--model", model_.string(), "--out", out.string(),
                                  "--calib", test::fixture_text("tinystories_train.txt").string(),
                                  "--nsamples", "12", "--seqlen", "64", "--group-size", "32"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  static nlohmann::json report(const fs::path& out) {
    return nlohmann::json::parse(test::read_bytes(out / "report.json"));
  }
  fs::path model_ = test::fixture_model("babyllama-tok105");
  test::TempDir dir_;
};

// The same files (names included: an extra or a missing file is a difference) with the same
// bytes, report.json (timings) aside.
void expect_same_files(const fs::path& a, const fs::path& b) {
  auto names = [](const fs::path& dir) {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
    return out;
  };
  const std::set<std::string> in_a = names(a);
  EXPECT_EQ(in_a, names(b)) << a << " and " << b << " hold different files";
  for (const std::string& name : in_a) {
    if (name == "report.json" || !fs::exists(b / name)) continue;
    EXPECT_TRUE(test::read_bytes(a / name) == test::read_bytes(b / name)) << name << " differs";
  }
}

TEST_F(Distributed, TwoAndThreeRanksWriteTheBytesOfOneProcess) {
  // gptq; beam with α sampled per window (drawn in window order on every rank); awq, whose scale
  // search every rank runs on the same windows, gathered from the ranks that hold them; sarqc,
  // whose λ each module's owner chooses on the held-out folds (exact sums too).
  for (const std::string method : {"gptq", "beam", "awq", "sarqc"}) {
    SCOPED_TRACE(method);
    const fs::path one = dir_ / method / "1";
    RunResult r = run_sarqc(args(one, {"--method", method}));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (const int n : {2, 3}) {
      SCOPED_TRACE(n);
      const fs::path out = dir_ / method / std::to_string(n);
      r = run_sarqc(args(out, {"--method", method, "--nproc", std::to_string(n)}));
      ASSERT_EQ(r.exit_code, 0) << r.err;
      // Ranks other than 0 log nothing below warnings, and nothing is left beside the output.
      EXPECT_FALSE(std::regex_search(r.err, std::regex("\\[rank [12]\\] \\[[^\\]]*\\] info:")))
          << r.err;
      EXPECT_EQ(fs::exists(dir_ / method / ("." + std::to_string(n) + ".sarqc-work")), false);
      expect_same_files(one, out);
      // The report too, but for timings and the session: the same modules, losses and tokens.
      const nlohmann::json a = report(one)["modules"], b = report(out)["modules"];
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i]["module"], b[i]["module"]);
        EXPECT_EQ(a[i]["tokens"], b[i]["tokens"]) << a[i]["module"];
        EXPECT_EQ(a[i]["loss"], b[i]["loss"]) << a[i]["module"];
        EXPECT_EQ(a[i]["lambda"]["lambda"], b[i]["lambda"]["lambda"]) << a[i]["module"];
        EXPECT_EQ(a[i]["lambda"]["held_out_chosen"], b[i]["lambda"]["held_out_chosen"])
            << a[i]["module"];
      }
    }
  }
}

// A mixture of experts (make-moe: 8 experts, top-2, qwen3_moe layout with a few windows, so that
// an expert may see tokens on one rank and none on another): every expert's statistics are
// reduced on every rank, starved experts are decided from the counts over all windows, and
// 2 ranks write the one-process bytes under both starved-expert policies (with all-tokens, by
// sarqc: the held-out folds of routed and all-tokens Grams are reduced as well).
TEST_F(Distributed, AMixtureOfExpertsOnTwoRanksWritesTheBytesOfOneProcess) {
  const fs::path moe = dir_ / "moe-source";
  RunResult r = run_sarqc({"make-moe", "--model", model_.string(), "--out", moe.string(),
                           "--experts", "8", "--top-k", "2", "--layout", "qwen3_moe"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string policy : {"rtn", "all-tokens"}) {
    SCOPED_TRACE(policy);
    auto moe_args = [&](const fs::path& out, const std::vector<std::string>& extra) {
      std::vector<std::string> a = {"quantize", "--model", moe.string(), "--out", out.string(),
                                    "--calib", test::fixture_text("tinystories_train.txt").string(),
                                    "--nsamples", "6", "--seqlen", "32", "--group-size", "32",
                                    "--moe-policy", policy, "--moe-min-tokens", "20",
                                    "--method", policy == "rtn" ? "gptq" : "sarqc",
                                    // the clip's search (across ranks: the test above) would
                                    // triple the time of sarqc's λ candidates here
                                    "--no-mse-clip"};
      a.insert(a.end(), extra.begin(), extra.end());
      return a;
    };
    const fs::path one = dir_ / policy / "1", two = dir_ / policy / "2";
    r = run_sarqc(moe_args(one, {}));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = run_sarqc(moe_args(two, {"--nproc", "2"}));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    expect_same_files(one, two);
    const nlohmann::json a = report(one)["modules"], b = report(two)["modules"];
    ASSERT_EQ(a.size(), b.size());
    int starved = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i]["method"], b[i]["method"]) << a[i]["module"];
      EXPECT_EQ(a[i]["tokens"], b[i]["tokens"]) << a[i]["module"];
      EXPECT_EQ(a[i].value("reason", ""), b[i].value("reason", "")) << a[i]["module"];
      starved += a[i].value("reason", "").find("routed tokens <") != std::string::npos ? 1 : 0;
    }
    // Some experts are starved (their decision rests on the reduced counts), some are not.
    EXPECT_GT(starved, 0);
    EXPECT_LT(starved, static_cast<int>(a.size()) / 2);
  }
}

// torchrun / srun: one process per rank with the launch variables; the same bytes as --nproc 2.
// Then rank 1 killed mid-layer (SARQC_FAULT in its environment only): rank 0 exits in time,
// naming the rank it lost; the rerun resumes.
TEST_F(Distributed, RanksFromTheTorchrunVariablesAndARankKilledMidLayer) {
  const fs::path reference = dir_ / "ref" / "q";
  ASSERT_EQ(run_sarqc(args(reference, {"--nproc", "2"})).exit_code, 0);
  auto launch = [&](const fs::path& out, const std::string& rank1_env) {
    std::string script;
    const int port = 20000 + static_cast<int>((::getpid() * 13 + out.string().size()) % 20000);
    for (int r = 0; r < 2; ++r) {
      script += "RANK=" + std::to_string(r) + " WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                std::to_string(port) + " SARQC_DIST_TIMEOUT=20 " + (r == 1 ? rank1_env : "") +
                " " + test::shell_quote(SARQC_BINARY);
      for (const auto& a : args(out, {})) script += " " + test::shell_quote(a);
      script += " > /dev/null 2> " + test::shell_quote((dir_ / ("err" + std::to_string(r))).string()) +
                " &\npid" + std::to_string(r) + "=$!\n";
    }
    for (int r = 0; r < 2; ++r)
      script += "wait $pid" + std::to_string(r) + "; echo $? > " +
                test::shell_quote((dir_ / ("rc" + std::to_string(r))).string()) + "\n";
    test::write_bytes(dir_ / "launch.sh", script);
    std::system(("bash " + test::shell_quote((dir_ / "launch.sh").string())).c_str());
    return std::vector<int>{std::stoi(test::read_bytes(dir_ / "rc0")),
                            std::stoi(test::read_bytes(dir_ / "rc1"))};
  };
  const fs::path out = dir_ / "torchrun" / "q";
  std::vector<int> codes = launch(out, "");
  ASSERT_EQ(codes, (std::vector<int>{0, 0})) << test::read_bytes(dir_ / "err0")
                                             << test::read_bytes(dir_ / "err1");
  expect_same_files(reference, out);

  const fs::path killed = dir_ / "killed" / "q";
  const auto start = std::chrono::steady_clock::now();
  // Rank 1 owns k, v and up of each layer (module parallelism): its 5th rounding is in layer 1.
  codes = launch(killed, "SARQC_FAULT=rounding:5");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(codes[1], 128 + SIGKILL);
  EXPECT_EQ(codes[0], kExitRuntime) << test::read_bytes(dir_ / "err0");
  const std::string err0 = test::read_bytes(dir_ / "err0");
  EXPECT_TRUE(std::regex_search(
      err0, std::regex("sarqc: error: rank 0: rank 0 of 2: (all-reduce|broadcast) failed")))
      << err0;
  EXPECT_NE(err0.find("rank 1 stopped answering"), std::string::npos) << err0;
  EXPECT_LT(seconds, 60);
  // Layer 0 was saved before rank 1 died (each rank its streams, rank 0 the state): the error
  // says so. A rerun with another world size is refused and keeps the state; the same command
  // resumes and writes the uninterrupted bytes.
  EXPECT_NE(err0.find("1 of 5 layers are saved"), std::string::npos) << err0;
  RunResult r = run_sarqc(args(killed, {"--nproc", "3"}));
  EXPECT_EQ(r.exit_code, kExitStateConflict) << r.err;
  EXPECT_NE(r.err.find("ranks: 2 when saved, 3 now"), std::string::npos) << r.err;
  // The other ranks point at rank 0's line rather than diagnose a lost connection.
  EXPECT_NE(r.err.find("rank 1 of 3: rank 0 stopped before the run began"), std::string::npos)
      << r.err;
  r = run_sarqc(args(killed, {"--nproc", "2"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("resuming at layer 2/5"), std::string::npos) << r.err;
  expect_same_files(reference, killed);
  EXPECT_EQ(report(killed)["sessions"].size(), 2u);
  EXPECT_FALSE(fs::exists(dir_ / "killed" / ".q.sarqc-work"));
}

// `signal` to the --nproc launcher alone: it passes `passed_on` to every rank, which saves and
// stops as one process does, rank 0 says so, the launcher exits 128 + `passed_on`, and no rank
// is left running to publish the output.
void expect_launcher_passes_on(const std::vector<std::string>& args, const fs::path& dir,
                               const fs::path& out, int signal, int passed_on,
                               const std::string& name) {
  const RunResult r = test::run_sarqc_and_signal(args, dir, signal);
  EXPECT_EQ(r.exit_code, 128 + passed_on) << r.err;
  EXPECT_NE(r.err.find("sarqc: error: rank 0: " + out.string() + ": interrupted by " + name),
            std::string::npos)
      << r.err;
  std::this_thread::sleep_for(std::chrono::seconds(2));  // a rank left running would publish
  EXPECT_FALSE(fs::exists(out));
}

// A scheduler's SIGTERM reaches the launcher only. (Before, the launcher died at once and the
// ranks ran on and published the output.)
TEST_F(Distributed, TheLauncherPassesSigtermOnToItsRanks) {
  const fs::path out = dir_ / "q";
  expect_launcher_passes_on(args(out, {"--nproc", "2"}), dir_.path(), out, SIGTERM, SIGTERM,
                            "SIGTERM");
}

// SIGHUP (a closed terminal) reaches the ranks as SIGTERM; before, the ranks, which do not
// handle SIGHUP, died on the spot.
TEST_F(Distributed, TheLauncherPassesSighupOnAsSigterm) {
  const fs::path out = dir_ / "q";
  expect_launcher_passes_on(args(out, {"--nproc", "2"}), dir_.path(), out, SIGHUP, SIGTERM,
                            "SIGTERM");
}

// A terminal's Ctrl-C (or a scheduler's job-wide SIGTERM) reaches the launcher and every rank;
// the launcher passes its copy on too, and a rank must not take that copy for a second signal
// (which ends it at once, without its state or its line).
TEST_F(Distributed, ASignalToTheWholeProcessGroupStopsEveryRankGracefully) {
  const fs::path out = dir_ / "q";
  const pid_t launcher = test::spawn_sarqc(args(out, {"--nproc", "2"}), (dir_ / "out").string(),
                                           (dir_ / "err").string(), /*own_process_group=*/true);
  test::wait_for_work_folder(dir_.path());
  ::kill(-launcher, SIGINT);
  EXPECT_EQ(test::wait_exit_code(launcher), 128 + SIGINT);
  const std::string err = test::read_bytes(dir_ / "err");
  for (const std::string rank : {"0", "1"})
    EXPECT_NE(err.find("sarqc: error: rank " + rank + ": "), std::string::npos)
        << "rank " << rank << " stopped without its line:\n" << err;
  EXPECT_NE(err.find("rank 0: " + out.string() + ": interrupted by SIGINT"), std::string::npos)
      << err;
  EXPECT_FALSE(fs::exists(out));
}

// The PIDs of `pid`'s children (its main thread's: the launcher forks from it).
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> children;
  std::istringstream in(test::read_bytes(fmt::format("/proc/{0}/task/{0}/children", pid)));
  for (pid_t child = 0; in >> child;) children.push_back(child);
  return children;
}

bool running(pid_t pid) {  // alive and not a zombie waiting for a reaper
  const std::string stat = test::read_bytes(fmt::format("/proc/{}/stat", pid));
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// kill -9 of the launcher: its ranks get SIGTERM from the kernel (PR_SET_PDEATHSIG), save and
// stop instead of running on as orphans that publish an output nobody waits for.
TEST_F(Distributed, RanksStopWhenTheLauncherIsKilled) {
  if (!fs::exists(fmt::format("/proc/{0}/task/{0}/children", ::getpid())))
    GTEST_SKIP() << "needs /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN)";
  const fs::path out = dir_ / "q";
  const pid_t launcher = test::spawn_sarqc(args(out, {"--nproc", "2"}),
                                           (dir_ / "out").string(), (dir_ / "err").string());
  test::wait_for_work_folder(dir_.path());
  const std::vector<pid_t> ranks = children_of(launcher);
  ::kill(launcher, SIGKILL);
  test::wait_exit_code(launcher);
  ASSERT_EQ(ranks.size(), 2u) << "the launcher's children when its work folder appeared";
  const auto stop_by = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (const pid_t rank : ranks) {
    while (running(rank) && std::chrono::steady_clock::now() < stop_by)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_FALSE(running(rank)) << "rank process " << rank << " outlived its launcher";
  }
  EXPECT_FALSE(fs::exists(out)) << "orphaned ranks published the output";
}

// Two "nodes": two network namespaces joined by a veth pair (10.9.0.1 and 10.9.0.2), one rank in
// each with its node-local LOCAL_RANK 0, meeting at rank 0's address over GLOO_SOCKET_IFNAME,
// not loopback. They share the file system, as nodes with a shared home do.
TEST_F(Distributed, TwoNodesOnAVethPairWriteTheBytesOfOneProcess) {
  const fs::path one = dir_ / "one", two = dir_ / "two";
  RunResult r = run_sarqc(args(one, {}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto command = [&](const std::string& env) {
    std::string c = env + " " + test::shell_quote(SARQC_BINARY);
    for (const auto& a : args(two, {})) c += " " + test::shell_quote(a);
    return c;
  };
  const std::string common = "WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=10.9.0.1 MASTER_PORT=29517 "
                             "SARQC_DIST_TIMEOUT=60";
  const std::string d = dir_.path().string();
  const std::string script =
      "set -u\n"
      "ip link set lo up && ip link add va type veth peer name vb || exit 77\n"
      "unshare -n sleep 300 & holder=$!\n"
      "sleep 0.5\n"
      "ip link set vb netns $holder && ip addr add 10.9.0.1/24 dev va && ip link set va up || "
      "{ kill $holder; exit 77; }\n"
      "nsenter -t $holder -n sh -c 'ip link set lo up && ip addr add 10.9.0.2/24 dev vb && "
      "ip link set vb up' || { kill $holder; exit 77; }\n" +
      command(common + " RANK=0 GLOO_SOCKET_IFNAME=va") + " >/dev/null 2>" +
      test::shell_quote(d + "/node0.err") + " &\nrank0=$!\n" + "nsenter -t $holder -n env " +
      command(common + " RANK=1 GLOO_SOCKET_IFNAME=vb") + " >/dev/null 2>" +
      test::shell_quote(d + "/node1.err") + "\necho $? > " + test::shell_quote(d + "/rc1") +
      "\nwait $rank0\necho $? > " + test::shell_quote(d + "/rc0") + "\nkill $holder\n";
  test::write_bytes(dir_ / "nodes.sh", script);
  const int status = std::system(("unshare -rn bash " + test::shell_quote((dir_ / "nodes.sh").string()) +
                                  " 2>" + test::shell_quote((dir_ / "unshare.err").string()))
                                     .c_str());
  if (!WIFEXITED(status) || WEXITSTATUS(status) == 77 || !fs::exists(dir_ / "rc0"))
    GTEST_SKIP() << "cannot make network namespaces joined by a veth pair here (needs "
                    "unprivileged user namespaces and iproute2): "
                 << test::read_bytes(dir_ / "unshare.err");
  EXPECT_EQ(test::read_bytes(dir_ / "rc0"), "0\n") << test::read_bytes(dir_ / "node0.err");
  EXPECT_EQ(test::read_bytes(dir_ / "rc1"), "0\n") << test::read_bytes(dir_ / "node1.err");
  expect_same_files(one, two);
}

TEST_F(Distributed, FewerBatchesThanRanksIsAUsageError) {
  const RunResult r =
      run_sarqc({"quantize", "--model", model_.string(), "--out", (dir_ / "few").string(),
                 "--calib", test::fixture_text("tinystories_train.txt").string(), "--nsamples",
                 "2", "--seqlen", "64", "--nproc", "3"});
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_NE(r.err.find("2 calibration windows for 3 ranks: each rank needs at least one batch"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "few"));
}

}  // namespace
}  // namespace sarqc
