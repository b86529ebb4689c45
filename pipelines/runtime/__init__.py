"""How the system runs: Ray started or joined (cluster), the driver's guard, the console and
progress bars, free ports, cluster job submission."""
