"""Launchers for Cloud TPU slices: TPU VMs (gcloud) and GKE (a JobSet). Tools that print or run
cluster commands; nothing in the library imports them."""
