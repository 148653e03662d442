"""pam_slurm_adopt's behaviour as a pam_exec hook."""
