"""Agents: a bounded tool-using loop over a local or served model.

    from kifabrik.agents import load_agent_recipe, open_agent
    run = open_agent(ws, load_agent_recipe("schmidt-demo"))
    result = run.run("What is the status of order A-1007?")

Tools are Python callables registered by name (`kifabrik.agents.tools.agent_tool`) and
offered only when a recipe allow-lists them, or tools of MCP servers the recipe starts.
"""

from kifabrik.agents.loop import AgentResult, ChatModel, Step, Turn, run_agent
from kifabrik.agents.recipe import AgentRecipe, AgentRun, load_agent_recipe, open_agent
from kifabrik.agents.tools import Tool, ToolError, agent_tool, resolve

__all__ = ["AgentRecipe", "AgentResult", "AgentRun", "ChatModel", "Step", "Tool", "ToolError", "Turn", "agent_tool",
           "load_agent_recipe", "open_agent", "resolve", "run_agent"]
