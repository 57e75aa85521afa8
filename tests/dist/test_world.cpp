// Several ranks on c10d (TCPStore + ProcessGroupGloo) over loopback: the probe program is started
// as 2 and 3 ranks, through --nproc (run_local_ranks) and through the torchrun variables; a rank
// that dies makes the others fail within the timeout, naming themselves and the operation.
#include <gtest/gtest.h>
#include <unistd.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "python_reference.h"
#include "sarqc/dist/local_ranks.h"
#include "test_support.h"

namespace sarqc {
namespace {

struct ProbeRun {
  int exit_code = -1;
  std::string out, err;
  double seconds = 0;
};

// `env` is prepended to the command (NAME=value ...).
ProbeRun run_probe(const std::string& args, const std::string& env = "") {
  test::TempDir dir;
  const std::string command = env + " " + test::shell_quote(SARQC_DIST_PROBE) + " " + args +
                              " >" + test::shell_quote((dir / "out").string()) + " 2>" +
                              test::shell_quote((dir / "err").string()) + " </dev/null";
  const auto start = std::chrono::steady_clock::now();
  const int status = std::system(command.c_str());
  ProbeRun r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = test::read_bytes(dir / "out");
  r.err = test::read_bytes(dir / "err");
  return r;
}

// Every rank printed "sum ok, broadcast ok" and the same checksum.
void expect_ranks_agree(const ProbeRun& r, int n) {
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::regex line("rank (\\d+) of (\\d+): sum ok, broadcast ok, checksum ([0-9a-f]{64})");
  std::set<int> ranks;
  std::set<std::string> checksums;
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), line); it != std::sregex_iterator(); ++it) {
    ranks.insert(std::stoi((*it)[1]));
    EXPECT_EQ(std::stoi((*it)[2]), n);
    checksums.insert((*it)[3]);
  }
  EXPECT_EQ(ranks.size(), static_cast<size_t>(n)) << r.out;
  EXPECT_EQ(checksums.size(), 1u) << r.out;
}

std::string checksum_of(const ProbeRun& r) {
  const auto at = r.out.find("checksum ");
  return at == std::string::npos ? "" : r.out.substr(at + 9, 64);
}

TEST(World, TwoAndThreeLocalRanksReduceAndBroadcastAlike) {
  for (const int n : {2, 3}) {
    SCOPED_TRACE(n);
    const ProbeRun first = run_probe("--nproc " + std::to_string(n) + " --gram");
    expect_ranks_agree(first, n);
    // Gram statistics reduced over the ranks equal one accumulator over all windows, bit for
    // bit.
    size_t grams = 0;
    for (size_t at = first.out.find(", gram ok"); at != std::string::npos;
         at = first.out.find(", gram ok", at + 1))
      ++grams;
    EXPECT_EQ(grams, static_cast<size_t>(n)) << first.out;
    // The same world size reduces in the same order: the same bits on a rerun.
    const ProbeRun again = run_probe("--nproc " + std::to_string(n));
    expect_ranks_agree(again, n);
    EXPECT_EQ(checksum_of(first), checksum_of(again));
  }
}

// As torchrun or srun start them: one process per rank with RANK, WORLD_SIZE, MASTER_ADDR and
// MASTER_PORT set by the launcher (here a shell script). Exit codes and output per rank.
struct RankRuns {
  std::vector<int> exit_codes;
  std::vector<std::string> output;  // stdout and stderr
  double seconds = 0;
};

RankRuns launch_ranks(int n, const std::string& args, const std::string& env = "") {
  test::TempDir dir;
  const int port = 20000 + static_cast<int>((::getpid() * 7 + n) % 20000);
  std::string script;
  for (int r = 0; r < n; ++r)
    script += env + " RANK=" + std::to_string(r) + " LOCAL_RANK=" + std::to_string(r) +
              " WORLD_SIZE=" + std::to_string(n) + " MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
              std::to_string(port) + " " + test::shell_quote(SARQC_DIST_PROBE) + " " + args +
              " > " + test::shell_quote((dir / ("out" + std::to_string(r))).string()) +
              " 2>&1 &\npid" + std::to_string(r) + "=$!\n";
  for (int r = 0; r < n; ++r)
    script += "wait $pid" + std::to_string(r) + "; echo $? > " +
              test::shell_quote((dir / ("rc" + std::to_string(r))).string()) + "\n";
  test::write_bytes(dir / "launch.sh", script);
  const auto start = std::chrono::steady_clock::now();
  std::system(("bash " + test::shell_quote((dir / "launch.sh").string())).c_str());
  RankRuns runs;
  runs.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int r = 0; r < n; ++r) {
    runs.exit_codes.push_back(std::stoi(test::read_bytes(dir / ("rc" + std::to_string(r)))));
    runs.output.push_back(test::read_bytes(dir / ("out" + std::to_string(r))));
  }
  return runs;
}

TEST(World, RanksStartedWithTheTorchrunVariablesMeet) {
  const RankRuns runs = launch_ranks(2, "");
  ProbeRun all;
  all.exit_code = runs.exit_codes[0] + runs.exit_codes[1];
  all.out = runs.output[0] + runs.output[1];
  all.err = all.out;
  expect_ranks_agree(all, 2);
}

// Rank 1 of 3 is killed after the first all-reduce: ranks 0 and 2 must not wait for it forever,
// and say which rank they lost.
TEST(World, ARankThatDiesMakesTheOthersFailWithinTheTimeout) {
  const int timeout = 20;
  const RankRuns runs = launch_ranks(3, "--die 1", "SARQC_DIST_TIMEOUT=" + std::to_string(timeout));
  EXPECT_EQ(runs.exit_codes[1], 128 + SIGKILL);
  for (const int r : {0, 2}) {
    EXPECT_EQ(runs.exit_codes[r], kExitRuntime) << runs.output[r];
    // The collective it was in when the connection to rank 1 broke (Gloo's ring may still be
    // finishing the all-reduce).
    const std::regex failed("rank " + std::to_string(r) +
                            " of 3: (all-reduce|broadcast|barrier) failed: another rank died.*: "
                            "rank 1 stopped answering");
    EXPECT_TRUE(std::regex_search(runs.output[r], failed)) << runs.output[r];
  }
  EXPECT_LT(runs.seconds, timeout + 30) << "the surviving ranks waited too long";
}

// Rank 1 of 3 stops taking part (alive, connections open): the others time out and name it.
TEST(World, ARankThatHangsMakesTheOthersFailAtTheTimeout) {
  const int timeout = 5;
  const RankRuns runs = launch_ranks(3, "--hang 1", "SARQC_DIST_TIMEOUT=" + std::to_string(timeout));
  for (const int r : {0, 2}) {
    EXPECT_EQ(runs.exit_codes[r], kExitRuntime) << runs.output[r];
    const std::regex failed("rank " + std::to_string(r) +
                            " of 3: (all-reduce|broadcast|barrier) failed: another rank died or "
                            "did not answer within 5 s: rank 1 is alive but still at "
                            "collective 1 of");
    EXPECT_TRUE(std::regex_search(runs.output[r], failed)) << runs.output[r];
  }
}

// --nproc: when a rank fails the launcher stops the others and returns the failure.
TEST(World, LocalLauncherReturnsTheFirstFailureAndStopsTheOthers) {
  const ProbeRun r = run_probe("--nproc 3 --die 1", "SARQC_DIST_TIMEOUT=600");
  EXPECT_EQ(r.exit_code, 128 + SIGKILL) << r.err;
  EXPECT_LT(r.seconds, 60) << "the launcher waited for the surviving ranks' timeout";
}

// The rendezvous has its own timeout, so that a short collective timeout does not fail ranks
// that start late; a rank whose peers never come fails at it, naming the address.
TEST(World, ARankWhosePeersNeverComeFailsAtTheRendezvousTimeout) {
  const ProbeRun r = run_probe("", "WORLD_SIZE=2 RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                                       std::to_string(20000 + ::getpid() % 20000) +
                                       " SARQC_DIST_TIMEOUT=600 SARQC_DIST_RENDEZVOUS_TIMEOUT=2");
  EXPECT_EQ(r.exit_code, kExitRuntime) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex("rank 1 of 2: rendezvous at 127\\.0\\.0\\.1:\\d+ "
                                                  "failed within 2 s: rank 0, which serves")))
      << r.err;
  EXPECT_LT(r.seconds, 60);
}

// Rank 0 serves the store; when a rank never comes, the rendezvous names it.
TEST(World, TheRendezvousNamesTheRankThatNeverCame) {
  const ProbeRun r = run_probe("", "WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                                       std::to_string(free_loopback_port()) +
                                       " SARQC_DIST_TIMEOUT=600 SARQC_DIST_RENDEZVOUS_TIMEOUT=2");
  EXPECT_EQ(r.exit_code, kExitRuntime) << r.err;
  EXPECT_TRUE(std::regex_search(r.err, std::regex("rank 0 of 2: rendezvous at 127\\.0\\.0\\.1:\\d+ "
                                                  "failed within 2 s: rank 1 of 2 did not arrive")))
      << r.err;
  EXPECT_LT(r.seconds, 60);
}

TEST(World, MalformedLaunchVariablesAreUsageErrors) {
  ProbeRun r = run_probe("", "WORLD_SIZE=2");
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_NE(r.err.find("WORLD_SIZE is set but RANK is not"), std::string::npos) << r.err;
  r = run_probe("", "WORLD_SIZE=2 RANK=5");
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_NE(r.err.find("RANK='5': expected an integer in [0, 1]"), std::string::npos) << r.err;
  r = run_probe("", "WORLD_SIZE=2 RANK=1 MASTER_PORT=http");
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_NE(r.err.find("MASTER_PORT='http'"), std::string::npos) << r.err;
  r = run_probe("", "WORLD_SIZE=2 RANK=1 SARQC_DIST_RENDEZVOUS_TIMEOUT=0");
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_NE(r.err.find("SARQC_DIST_RENDEZVOUS_TIMEOUT='0'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace sarqc
