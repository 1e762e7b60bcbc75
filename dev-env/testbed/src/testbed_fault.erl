%%% @doc Fault hooks for tests; call them on a testbed node (rpc).
%%%
%%%   kill_node()                 halts this node at once (as a crash would)
%%%   slow_worker(Who, Ms)        every call/cast of the worker(s) takes Ms more
%%%   crash_next(Who)             the worker(s) exit on their next request
%%%   clear(Who)                  removes slow/crash faults
%%%   unregister_worker(Who)      removes the Swarm name(s); the process keeps running
%%%   workers() / workers(Store)  [{Name, Pid}] of this node's gateway workers
%%% Who is a pid or a Swarm name (anywhere in the cluster), a store atom (every worker of
%%% it on this node) or `all' (every worker on this node).
-module(testbed_fault).
-export([kill_node/0, slow_worker/2, crash_next/1, clear/1, unregister_worker/1,
         workers/0, workers/1]).

kill_node() -> erlang:halt(137, [{flush, false}]).

slow_worker(Who, Ms) -> signal(Who, {testbed_fault, slow, Ms}).

crash_next(Who) -> signal(Who, {testbed_fault, crash_next}).

clear(Who) -> signal(Who, {testbed_fault, clear}).

unregister_worker(Who) ->
    [ok = erpc:call(node(Pid), 'Elixir.Swarm', unregister_name, [Name])
     || {Name, Pid} <- resolve(Who)],
    ok.

workers() ->
    [W || {Name, _} = W <- 'Elixir.Swarm':local_registered(),
          'Elixir.ExESDB.GatewayWorker':is_worker_name(Name)].

workers(Store) -> [W || {{gateway_worker, S, _, _}, _} = W <- workers(), S =:= Store].

%% Sends the fault and waits until the worker has taken it (a sys call queues behind it).
signal(Who, Msg) ->
    Pids = [Pid || {_, Pid} <- resolve(Who)],
    [Pid ! Msg || Pid <- Pids],
    [catch sys:get_state(Pid, 5000) || Pid <- Pids],
    length(Pids).

resolve(all) -> workers();
resolve(Pid) when is_pid(Pid) -> [W || {_, P} = W <- cluster_workers(), P =:= Pid];
resolve(Store) when is_atom(Store) -> workers(Store);
resolve(Name) -> [W || {N, _} = W <- cluster_workers(), N =:= Name].

cluster_workers() ->
    [W || {Name, _} = W <- 'Elixir.Swarm':registered(),
          'Elixir.ExESDB.GatewayWorker':is_worker_name(Name)].
