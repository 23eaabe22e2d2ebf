"""trailproc: process AWS CloudTrail log deliveries."""
