"""An external consumer of dwsim's `invoice-posted`: one notification per posted invoice."""
