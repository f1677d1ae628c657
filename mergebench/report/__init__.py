"""From result records to the MergeBench tables: domain scores, normalized performance, forgetting,
merge cost; rendered as markdown, JSON, a terminal table and plots."""
