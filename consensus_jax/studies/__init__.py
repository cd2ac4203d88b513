"""Studies of the selection and its reward model, judged by raters the selector never saw.

  rating_rows     the (round, member, candidate) rows an RM evaluation scores, and metrics
                  over them shared by every predictor
  rm_peers        the RM's reference predictors on those rows: the simulator's ceiling, a
                  bag-of-words ridge peer, the other members' ratings
  judges          simulated raters for any text: the population itself and a perturbed one
  statistics      win rates, confidence intervals, paired effects with p-values
  systems         the head-to-head systems chosen from candidates, opinions and utilities
  runner          sample -> score -> judge for groups of held-out rounds (the studies' data)
  head_to_head, exclusion, welfare_rules
                  the studies (json + markdown + PNG plots)
  plots           matplotlib figures
"""
