"""Executors: where a recipe's stages run. `local` is `kifabrik.pipeline.run_recipe` in this process;
`slurm` (`kifabrik.executors.slurm`) submits one sbatch job per stage."""
