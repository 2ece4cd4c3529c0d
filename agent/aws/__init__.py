"""AWS adapters: boto3 clients built once, errors translated into agent.errors."""
