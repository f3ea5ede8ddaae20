#!/usr/bin/env bash
# The medians, per case and target, of the BENCH lines in RUNS_FILE (scripts/vm/bench-lib.sh),
# as a table.
#   scripts/vm/bench-medians.sh RUNS_FILE
set -euo pipefail
printf "%-18s %-10s %9s %8s %10s %10s %12s %12s\n" case target IOPS MiB/s "mean us" "p99 us" "cpu us/io" "tgt us/io"
awk '
  $1 == "BENCH" && NF > 3 {
    k = $3 " " $2; keys[k] = 1
    for (i = 4; i <= NF; i++) { split($i, kv, "="); v[k, kv[1], ++n[k, kv[1]]] = kv[2] + 0 }
  }
  function median(k, f,   m, i, j, t, a) {
    m = n[k, f]; for (i = 1; i <= m; i++) a[i] = v[k, f, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    for (k in keys) {
      split(k, p, " ")
      printf "%-18s %-10s %9.0f %8.1f %10.1f %10.1f %12.1f %12.1f\n", p[1], p[2], median(k, "iops"), median(k, "mib_s"), median(k, "lat_mean_us"), median(k, "lat_p99_us"), median(k, "cpu_us_per_io"), median(k, "tcpu_us_per_io")
    }
  }' "$1" | sort
