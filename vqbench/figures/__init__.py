"""The report's figures (matplotlib, Agg) and the labelled PNG grids a cell writes; ``vqbench.plots.plot_section``
puts them into ``report.md``."""
