"""Monitoring: what a model saw when it was validated, and how far a screening night is from it.

1. At training, `Reference.from_validation` keeps, with the model (`reference.json` in its
   bundle, and an MLflow artifact), what screening can measure again cheaply: the validation
   split's study probabilities (a seeded sample of at most 5,000), its flag rate at the
   model's threshold, its body-part mix (studies per part), and the model-input statistics
   of its images: mean and standard deviation of each image's 8-bit pixels, the `windowing`
   and `inverted` counts and the original image sizes.
2. Every screening run measures the same things of its own images (`Snapshot`).
3. `drift(reference, snapshot)` compares the two with library statistics: the population
   stability index (PSI: the symmetric Kullback-Leibler divergence of binned proportions,
   `scipy.stats.entropy` both ways; bins are the reference's deciles) and the two-sample
   Kolmogorov-Smirnov statistic (`scipy.stats.ks_2samp`) of the study scores and of the
   images' mean intensity, and a chi-square test of the body-part mix
   (`scipy.stats.chi2_contingency`, reference counts against tonight's) with its Cramér's V.
4. `Bands` says when a figure is out of band; `alerts` turns the out-of-band figures into
   one-line reasons (a run with any gets the MLflow tag `mura.alert`).

Everything here is numbers and category names: no identifier ever enters a reference or a
snapshot. Modules: `inputs` (what is measured of the images; numpy only, so the scoring
actors import little), `snapshot` (a population of studies; the reference file), `drift`
(the statistics and bands; scipy). This `__init__` imports none of them.
"""
