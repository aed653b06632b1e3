# Shared by the benchmark scripts (sourced): the clock and the median they all use.

# Now, in milliseconds since the epoch.
now_ms() { date +%s%3N; }

# The median of the numbers given (integers or decimals).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
