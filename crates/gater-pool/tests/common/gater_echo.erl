%% An echo gen_server for gater-pool's tests and benchmark.
-module(gater_echo).
-behaviour(gen_server).
-export([start/1, init/1, handle_call/3, handle_cast/2, handle_info/2]).
-export([bench/3]).

start(Name) ->
    {ok, Pid} = gen_server:start({local, Name}, ?MODULE, [], []),
    Pid.

init([]) -> {ok, undefined}.

handle_call({sleep, Ms, Reply}, From, S) ->
    spawn(fun() -> timer:sleep(Ms), gen_server:reply(From, Reply) end),
    {noreply, S};
handle_call(get, _From, S) -> {reply, S, S};
handle_call(Req, _From, S) -> {reply, Req, S}.

handle_cast({store, X}, _) -> {noreply, X};
handle_cast({send_to, Pid, Msg}, S) -> Pid ! Msg, {noreply, S};
handle_cast({blob, Pid, N}, S) -> Pid ! binary:copy(<<7>>, N), {noreply, S};
handle_cast({watch, Pid, ReportTo}, S) ->
    spawn(fun() ->
        Ref = erlang:monitor(process, Pid),
        ReportTo ! {watching, Pid},
        receive {'DOWN', Ref, process, _, Reason} -> ReportTo ! {down, Reason} end
    end),
    {noreply, S};
%% A process that monitors Target (a pid or {Name, Node}) until told `let_go`.
handle_cast({hold, Target, ReportTo}, S) ->
    spawn(fun() ->
        Ref = erlang:monitor(process, Target),
        ReportTo ! {holding, Target, self()},
        receive
            let_go -> erlang:demonitor(Ref), ReportTo ! {let_go, Target};
            {'DOWN', Ref, process, _, Reason} -> ReportTo ! {down, Reason}
        end
    end),
    {noreply, S};
handle_cast(_, S) -> {noreply, S}.

handle_info(_, S) -> {noreply, S}.

%% BEAM-native client for the benchmark: Conc processes doing gen_server:call to
%% Target for Total calls in all; returns {Calls, WallUs, P50Us, P99Us, CpuUs} (CPU of
%% the whole client VM, from statistics(runtime)).
bench(Target, Conc, Total) ->
    PerProc = Total div Conc,
    Parent = self(),
    erlang:statistics(runtime),
    T0 = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() -> Parent ! {lat, self(), loop(Target, PerProc, [])} end)
            || _ <- lists:seq(1, Conc)],
    Lats = lists:append([receive {lat, P, L} -> L end || P <- Pids]),
    T1 = erlang:monotonic_time(microsecond),
    {_, CpuMs} = erlang:statistics(runtime),
    Sorted = lists:sort(Lats),
    N = length(Sorted),
    P50 = lists:nth(max(1, N * 50 div 100), Sorted),
    P99 = lists:nth(max(1, N * 99 div 100), Sorted),
    {N, T1 - T0, P50, P99, CpuMs * 1000}.

loop(_Target, 0, Acc) -> Acc;
loop(Target, K, Acc) ->
    T = erlang:monotonic_time(microsecond),
    K = gen_server:call(Target, K),
    loop(Target, K - 1, [erlang:monotonic_time(microsecond) - T | Acc]).
