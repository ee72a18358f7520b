"""Formula-driven datasets: each module turns a seed and its parameters into image arrays."""
