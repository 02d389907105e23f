# gnuplot script for scripts/bench.sh: nbdfs speed-up per test.
#   gnuplot -e "datafile='chart.dat'; outfile='bench.png'" bench-chart.gp
# chart.dat: "label" vs_nbdfuse vs_nbdfuse13 vs_ceiling target (nan = no
# value); every ratio is oriented so that higher is better (latency and time
# inverted); vs_nbdfuse is nbdfuse on this host (1.14 on Debian 12),
# vs_nbdfuse13 nbdfuse 1.22 from the Debian 13 tree.
set terminal pngcairo size 1800,760 noenhanced font ",10"
set output outfile
set datafile missing "nan"
set title "nbdfs speed-up (higher is better; latency and time rows inverted)"
set ylabel "nbdfs relative to the other client (x)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics rotate by -40 scale 0
set yrange [0:*]
set offsets 0.6, 0.6, 0.25, 0
set rmargin 10
set bmargin 9
set grid ytics
set key outside top center horizontal
plot datafile using 2:xtic(1) title "nbdfs / nbdfuse (this host, 1.14)" lc rgb "#3070b0", \
     '' using 3 title "nbdfs / nbdfuse 1.22 (Debian 13)" lc rgb "#30a070", \
     '' using 4 title "nbdfs / ceiling (no FUSE)" lc rgb "#a0a0a0", \
     '' using 0:5:(0.4):xtic(1) with xerrorbars pt 0 lw 3 lc rgb "#d03020" \
        title "target (vs each nbdfuse)", \
     1 with lines dt 2 lc rgb "black" title "parity"
