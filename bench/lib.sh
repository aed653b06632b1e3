# Shared by the benchmark scripts (sourced): the clock and the median they all use.

# Now, in milliseconds since the epoch.
now_ms() { date +%s%3N; }

# The median of the numbers given (integers or decimals).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# "median LABEL: X s, median testgrid: Y s, ratio testgrid/own R": the medians of two sets of
# runs in milliseconds, the framework's own and testgrid's (arrays named by $2 and $3).
medians_and_ratio() {
    local -n own_runs=$2 testgrid_runs=$3
    local mo mt
    mo=$(median "${own_runs[@]}"); mt=$(median "${testgrid_runs[@]}")
    printf 'median %s: %.1f s, median testgrid: %.1f s, ratio testgrid/own %.2f' \
        "$1" "$(echo "$mo / 1000" | bc -l)" "$(echo "$mt / 1000" | bc -l)" "$(echo "$mt / $mo" | bc -l)"
}
